"""Hand-edited stage records (a key dropped, a value of another type, a number changed): every
command that reads one answers with one line and exit 2, never a traceback or a wrong run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from edgefire import records
from edgefire.cli import app
from edgefire.errors import EdgefireError

RECORDS = ["train.json", "quantize.json", "export.json", "prune.json", "manifest.json"]
COMMANDS = [["verify", "--micro-images", "20"], ["export"], ["quantize", "--no-fallback"],
            ["predict", "{image}"], ["compare", "{folder}"]]
OTHER_TYPES = [None, 7, -1.5, "text", [], {}, True]


def paths(content, prefix=()):
    """Every key path of a JSON object, nested tables included."""
    for key, value in content.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from paths(value, (*prefix, key))


def mutate(content: dict, path: tuple, how: str, other):
    target = content
    for key in path[:-1]:
        target = target[key]
    if how == "drop":
        del target[path[-1]]
    elif how == "retype":
        target[path[-1]] = other
    elif isinstance(target[path[-1]], int | float) and not isinstance(target[path[-1]], bool):
        target[path[-1]] = target[path[-1]] * 3 + 1


@pytest.mark.slow
@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=st.sampled_from(RECORDS), command=st.sampled_from(COMMANDS),
       how=st.sampled_from(["drop", "retype", "edit"]), other=st.sampled_from(OTHER_TYPES),
       pick=st.integers(0, 10_000))
def test_an_edited_record_is_one_line_from_every_command(built, image_folder, tmp_path_factory,
                                                         record, command, how, other, pick):
    folder = shutil.copytree(built, tmp_path_factory.mktemp("edited") / "artifacts")
    content = json.loads((folder / record).read_text())
    keys = list(paths(content))
    mutate(content, keys[pick % len(keys)], how, other)
    (folder / record).write_text(json.dumps(content))
    image = next((image_folder / "test").rglob("*.png"))
    args = [a.format(image=image, folder=folder) for a in command]
    if command[0] != "compare":
        args += ["--artifacts", str(folder)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code in (0, 2), (record, keys[pick % len(keys)], how, result.output)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        errors = [line for line in result.output.splitlines() if line.startswith("edgefire:")]
        assert len(errors) == 1, result.output


COMMITTED_TRAIN = Path(__file__).parents[1] / "artifacts" / "train.json"


def test_the_committed_train_record_reads_typed(tmp_path):
    shutil.copy(COMMITTED_TRAIN, tmp_path / "train.json")
    trained = records.train(tmp_path)
    assert (trained.arch, trained.seed, trained.built_in) == ("squeezenet", 0, True)
    assert len(trained.classes) == 10 and trained.contract.shape == (32, 32, 3)
    assert trained.config["model"] is None  # a setting newer than the record: its old meaning


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(classes="cat"), "'classes' is not a list of class names"),
    (lambda r: r.update(classes=[]), "'classes' is not a list of class names"),
    (lambda r: r["config"].update(seed="0"), "config seed is not int"),
    (lambda r: r["config"].update(label_smoothing=[0.1]), "config label_smoothing is not float"),
    (lambda r: r["config"].update(colour=1), "unknown setting 'colour'"),
    (lambda r: r["config"].pop("dropout"), "has no 'dropout'"),
    (lambda r: r["data"].update(fingerprint=3), "'data' has no fingerprint"),
    (lambda r: r.update(config=[]), "'config' is not a table of settings"),
    (lambda r: r.update(data="here"), "'data' has no fingerprint"),
    (lambda r: r.update(input={"size": [0, 0]}), "input contract is not one edgefire wrote")])
def test_a_train_record_out_of_shape_is_one_line_naming_it(edit, message, tmp_path):
    content = json.loads(COMMITTED_TRAIN.read_text())
    edit(content)
    (tmp_path / "train.json").write_text(json.dumps(content))
    with pytest.raises(EdgefireError, match="train") as raised:
        records.train(tmp_path)
    assert message in str(raised.value)


def test_the_committed_quantize_and_export_records_read_typed(tmp_path):
    for name in ("quantize.json", "export.json"):
        shutil.copy(COMMITTED_TRAIN.with_name(name), tmp_path / name)
    quantized, exported = records.quantize(tmp_path), records.export(tmp_path)
    assert (quantized.artifact, quantized.precision) == ("squeezenet_int8.tflite", "int8")
    assert len(quantized.calibration) > 0 and exported.labels == "labels.txt"
    assert exported.deployables["squeezenet_int8.onnx"] == "int8"
    assert exported.source in ("pruned.h5", "trained.h5")


@pytest.mark.parametrize("name, edit, message", [
    ("quantize.json", lambda r: r.update(artifact="../../elsewhere.tflite"),
     "'artifact' is not a file name in its folder"),
    ("quantize.json", lambda r: r.update(artifact=["a"]), "'artifact' is not a file name"),
    ("quantize.json", lambda r: r.update(sparsity=2), "'sparsity' is not a fraction"),
    ("quantize.json", lambda r: r["calibration"].update(indices=["0"]),
     "'calibration' is not a list of image indices"),
    ("quantize.json", lambda r: r.update(precision=8), "'precision' is not text"),
    ("export.json", lambda r: r.update(source="/etc/passwd"), "'source' is not a file name"),
    ("export.json", lambda r: r["deployables"].update({"..": {"precision": "int8"}}),
     "'deployables' is not a table of files and their precisions"),
    ("export.json", lambda r: r["deployables"]["squeezenet_int8.onnx"].pop("precision"),
     "'deployables' is not a table of files and their precisions")])
def test_a_quantize_or_export_record_out_of_shape_is_one_line_naming_it(name, edit, message,
                                                                       tmp_path):
    content = json.loads(COMMITTED_TRAIN.with_name(name).read_text())
    edit(content)
    (tmp_path / name).write_text(json.dumps(content))
    stage = name.removesuffix(".json")
    with pytest.raises(EdgefireError, match=f"run `edgefire {stage}` again") as raised:
        getattr(records, stage)(tmp_path)
    assert message in str(raised.value) and str(tmp_path / name) in str(raised.value)


COMMITTED_PRUNE = Path(__file__).parents[1] / "artifacts" / "variants" / "channels_100k" / \
    "prune.json"


def test_the_committed_prune_record_reads_typed_and_an_edited_one_is_one_line(tmp_path):
    shutil.copy(COMMITTED_PRUNE, tmp_path / "prune.json")
    pruned = records.prune(tmp_path)
    assert (pruned.budget, pruned.parameters) == (100_000, 71_605)
    content = json.loads(COMMITTED_PRUNE.read_text())
    for key, value in (("config", [1]), ("parameters", {"after": "many"}),
                       ("multiply_accumulates", {"after": -3})):
        (tmp_path / "prune.json").write_text(json.dumps({**content, key: value}))
        with pytest.raises(EdgefireError, match="prune.json: .* run `edgefire prune` again"):
            records.prune(tmp_path)
    content["config"]["target_bytes"] = True
    (tmp_path / "prune.json").write_text(json.dumps(content))
    with pytest.raises(EdgefireError, match="'target_bytes' is not a byte count"):
        records.prune(tmp_path)


COMMITTED_REPORT = COMMITTED_TRAIN.with_name("report.json")


def test_the_committed_report_reads_typed_and_an_edited_one_is_one_line(tmp_path):
    shutil.copy(COMMITTED_REPORT, tmp_path / "report.json")
    verified = records.report(tmp_path)
    int8 = verified.file("tflite", "int8")
    assert (verified.reference, int8.name) == ("pruned.h5", "squeezenet_int8.tflite")
    assert 0 < int8.accuracy_ci95[0] < int8.accuracy < int8.accuracy_ci95[1] < 1
    assert verified.named("pruned.h5").file_format == "keras"
    content = json.loads(COMMITTED_REPORT.read_text())
    row = content["artifacts"][1]
    for edit in ({"artifacts": {}}, {"artifacts": [row | {"bytes": "big"}]},
                 {"artifacts": [row | {"accuracy": 1.5}]},
                 {"artifacts": [row | {"accuracy_ci95": [0.1]}]},
                 {"artifacts": [row | {"name": "../x.tflite"}]}, {"parameters": 0},
                 {"reference": None}):
        (tmp_path / "report.json").write_text(json.dumps({**content, **edit}))
        with pytest.raises(EdgefireError, match="report.json: .* run `edgefire verify` again"):
            records.report(tmp_path)
