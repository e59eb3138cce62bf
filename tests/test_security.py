"""Files edgefire reads never run code: a Keras file with a `Lambda` layer (given to predict,
or planted in an artifacts folder, named or not, nested or wrapped), a `TFOpLambda` naming a
TensorFlow function that does I/O, a SavedModel whose graph writes a file when restored, and
a CIFAR-10 batch whose pickle names a function."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefire import data, models
from edgefire.cli import app
from edgefire.errors import EdgefireError
from edgefire.models import stored_code
from edgefire.tfenv import keras


def _lambda_model(path, marker):
    """A working classifier whose Lambda layer writes `marker` when its code runs."""
    layers = keras().layers
    inputs = layers.Input((32, 32, 3))
    x = layers.Lambda(lambda t, m=str(marker): (open(m, "w").close(), t)[1], name="evil")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras().Model(inputs, layers.Dense(10, activation="softmax")(x))
    model.save(path)
    marker.unlink()  # building the model ran it once: only a later run counts
    return path


def test_predict_refuses_a_lambda_model_and_runs_none_of_its_code(trained_folder,
                                                                   image_folder, tmp_path):
    marker = tmp_path / "ran"
    model = _lambda_model(tmp_path / "evil.h5", marker)
    image = next((image_folder / "test").rglob("*.png"))
    result = CliRunner().invoke(app, ["predict", "--model", str(model), "--artifacts",
                                      str(trained_folder), str(image)])
    assert result.exit_code == 2, result.output
    assert "layer 'evil' is a Lambda layer" in result.output
    assert "--trust-model-code" in result.output
    assert not marker.exists()


def test_trust_model_code_lets_the_lambda_load(tmp_path):
    marker = tmp_path / "ran"
    model = _lambda_model(tmp_path / "evil.h5", marker)
    models.load_model(model, trust_code=True)
    assert marker.exists()  # the user said so: the code ran when Keras rebuilt the layer


def test_a_planted_trained_model_is_refused_by_prune(trained_folder, copy_of, tmp_path):
    folder = copy_of(trained_folder)
    marker = tmp_path / "ran"
    _lambda_model(tmp_path / "evil.h5", marker)
    shutil.copy(tmp_path / "evil.h5", folder / "trained.h5")
    manifest = json.loads((folder / "manifest.json").read_text())
    planted = (folder / "trained.h5").read_bytes()  # the manifest rewritten to match, too
    manifest["artifacts"]["trained.h5"].update(bytes=len(planted),
                                               sha256=hashlib.sha256(planted).hexdigest())
    (folder / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(app, ["prune", "--epochs", "1", "--artifacts", str(folder)])
    assert result.exit_code == 2, result.output
    assert "layer 'evil' is a Lambda layer" in result.output
    assert not marker.exists()


def test_a_model_saved_as_keras_zip_is_checked_too(tmp_path):
    marker = tmp_path / "ran"
    model = _lambda_model(tmp_path / "evil.keras", marker)
    with pytest.raises(EdgefireError, match="layer 'evil' is a Lambda layer"):
        models.load_model(model)
    assert not marker.exists()


def test_an_edgefire_model_has_no_stored_code(trained_folder):
    stored_code.refuse_stored_code(trained_folder / "trained.h5")  # no error
    names = [name for _, name, _ in stored_code.stored_entries(
        stored_code.stored_config(trained_folder / "trained.h5"))]
    assert "fire5/expand3x3" in names and "conv10" in names


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_planted_cifar_batch_is_refused_and_its_code_never_runs(cifar_folder, tmp_path):
    folder = shutil.copytree(cifar_folder, tmp_path / "cifar-10-batches-py")
    marker = tmp_path / "ran"
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _RunsCode(marker),
                                                        b"labels": [0]}))
    with pytest.raises(EdgefireError, match=r"data_batch_3: refused: the pickle asks for "
                                            r"(io|builtins)\.open"):
        data.load(str(folder))
    assert not marker.exists()


def test_class_names_are_inert_in_report_md(built):
    from edgefire import report

    result = json.loads((built / "report.json").read_text())
    result["classes"] = ["<img src=x onerror=alert(1)>", "a | b", *result["classes"][2:]]
    text = report.markdown(result)
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    for line in text.splitlines():
        if line.startswith("| a \\| b |"):
            assert line.replace("\\|", "").count("|") == line.count("|") - 1


def test_predict_escapes_file_names_and_stays_one_line_per_image(built, image_folder,
                                                                 tmp_path):
    import os

    source = next((image_folder / "test" / "cat").iterdir()).read_bytes()
    names = ["tab\there.png", "new\nline.png", os.fsdecode(b"caf\xe9.png")]
    for name in names:
        (tmp_path / name).write_bytes(source)
    plain = CliRunner().invoke(app, ["predict", str(tmp_path), "--artifacts", str(built)])
    assert plain.exit_code == 0, plain.output
    lines = plain.output.splitlines()
    assert len(lines) == 3 and all(line.count("\t") == 2 for line in lines)
    assert any("tab\\there.png" in line for line in lines)
    assert any("new\\nline.png" in line for line in lines)
    assert any("caf\\xe9.png" in line for line in lines)
    as_json = CliRunner().invoke(app, ["predict", str(tmp_path), "--artifacts", str(built),
                                       "--json"])
    assert as_json.exit_code == 0, as_json.output
    files = [r["file"] for r in json.loads(as_json.output.encode("utf-8"))]
    assert sorted(files)[0].endswith("caf\\xe9.png") and len(files) == 3


def test_predict_refuses_labels_edited_after_the_build(built, copy_of, image_folder):
    folder = copy_of(built)
    labels = (folder / "labels.txt").read_text().splitlines()
    (folder / "labels.txt").write_text("\n".join([labels[1], labels[0], *labels[2:]]) + "\n")
    image = next((image_folder / "test").rglob("*.png"))
    result = CliRunner().invoke(app, ["predict", str(image), "--artifacts", str(folder)])
    assert result.exit_code == 2, result.output
    assert "labels.txt: bytes do not match the manifest" in result.output


def test_a_foreign_tflite_answers_with_its_own_labels(built, image_folder, tmp_path):
    model = Path(shutil.copy(built / "squeezenet_int8.tflite", tmp_path / "theirs.tflite"))
    image = next((image_folder / "test" / "ship").glob("*.png"))
    other = tmp_path / "other-build"
    other.mkdir()
    (other / "labels.txt").write_text("x\ny\n")  # another build's names: not this file's
    result = CliRunner().invoke(app, ["predict", str(image), "--model", str(model),
                                      "--artifacts", str(other), "--json"])
    assert result.exit_code == 0, result.output
    own = CliRunner().invoke(app, ["predict", str(image), "--artifacts", str(built), "--json"])
    assert json.loads(result.output)[0]["top"] == json.loads(own.output)[0]["top"]


def test_predict_without_labels_txt_reads_the_names_packed_in_the_tflite(built, copy_of,
                                                                          image_folder):
    folder = copy_of(built)
    image = next((image_folder / "test" / "ship").glob("*.png"))
    before = CliRunner().invoke(app, ["predict", str(image), "--artifacts", str(folder),
                                      "--json", "--top", "3"])
    (folder / "labels.txt").unlink()
    after = CliRunner().invoke(app, ["predict", str(image), "--artifacts", str(folder),
                                     "--json", "--top", "3"])
    assert after.exit_code == 0, after.output
    assert "labels.txt is missing: class names from squeezenet_int8.tflite's metadata" in \
        after.stderr
    assert json.loads(after.stdout) == json.loads(before.stdout)
