"""A table of bad inputs through the CLI: the documented exit code, exactly one
`edgefire: error:` line, no traceback, and no file under its final name changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefire import artifacts
from edgefire.cli import app


def _no_setup(folder: Path, data: Path) -> None:
    pass


def _delete(name):
    def setup(folder, data):
        (folder / name).unlink()

    return setup


def _truncate(name):
    def setup(folder, data):
        content = (folder / name).read_bytes()
        (folder / name).write_bytes(content[:len(content) // 2])

    return setup


def _flip_byte(name):
    def setup(folder, data):
        content = bytearray((folder / name).read_bytes())
        content[len(content) // 2] ^= 0xFF
        (folder / name).write_bytes(bytes(content))

    return setup


def _write(name, text):
    def setup(folder, data):
        (folder / name).write_text(text)

    return setup


def _old_schema(folder, data):
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "schema": 0}))


def _forge_report(folder, data):
    report = json.loads((folder / "report.json").read_text())
    report["artifacts"][1]["accuracy"] = 0.99
    (folder / "report.json").write_text(json.dumps(report))


def _empty_folder(folder, data):
    shutil.rmtree(folder)
    folder.mkdir()


def _no_test_split(folder, data):
    shutil.rmtree(data / "test")


def _corrupt_image(folder, data):
    next((data / "train" / "deer").iterdir()).write_bytes(b"not a png")


def _data_inside_artifacts(folder, data):
    shutil.copytree(data, folder / "x")


def _writes(name, content: bytes):
    def setup(folder, data):
        (data / name).write_bytes(content)

    return setup


def _text_file_as_data(folder, data):
    (data / "x.txt").write_text("hello")


# (id, setup, command line with {a} = artifacts folder and {d} = data folder, exit, needle)
CASES = [
    ("epochs 0", _no_setup, "train --epochs 0", 2, "--epochs must be >= 1"),
    ("epochs huge", _no_setup, "train --epochs 10000000000", 2, "<= 10000"),
    ("epochs not a number", _no_setup, "train --epochs abc", 2, "Invalid value for '--epochs'"),
    ("batch size 0", _no_setup, "train --batch-size 0", 2, "--batch-size must be >= 1"),
    ("learning rate 0", _no_setup, "train --learning-rate 0", 2, "--learning-rate must be > 0"),
    ("learning rate nan", _no_setup, "train --learning-rate nan", 2, "finite number (got nan)"),
    ("learning rate inf", _no_setup, "train --learning-rate inf", 2, "finite number (got inf)"),
    ("dropout 1", _no_setup, "train --dropout 1", 2, "--dropout must be >= 0 and < 1"),
    ("negative seed", _no_setup, "train --seed -1", 2, "--seed must be >= 0"),
    ("limit 1", _no_setup, "train --limit 1", 2, "--limit must be >= 2"),
    ("validation 0", _no_setup, "train --val-size 0", 2, "--val-size must be >= 1"),
    ("unknown arch", _no_setup, "train --arch squeezenet33", 2, "did you mean 'squeezenet32'"),
    ("unknown optimizer", _no_setup, "train --optimizer adamw", 2, "did you mean 'adam'"),
    ("unknown distribute", _no_setup, "train --distribute mirror", 2, "did you mean 'mirrored'"),
    ("unknown option", _no_setup, "train --nope", 2, "No such option: --nope"),
    ("empty artifacts", _no_setup, "train --artifacts=", 2, "must not be empty"),
    ("sparsity 1.2", _no_setup, "prune --sparsity 1.2", 2, "--sparsity must be >= 0 and < 1"),
    ("sparsity nan", _no_setup, "prune --sparsity nan", 2, "finite number"),
    ("prune epochs 0", _no_setup, "prune --epochs 0", 2, "--epochs must be >= 1"),
    ("prune negative rate", _no_setup, "prune --learning-rate -1", 2, "must be > 0"),
    ("quantize int4", _no_setup, "quantize --quantize int4", 2, "did you mean 'int8'"),
    ("io uint16", _no_setup, "quantize --io uint16", 2, "did you mean 'uint8'"),
    ("calibration 0", _no_setup, "quantize --calibration-samples 0", 2, "must be >= 1"),
    ("qat epochs 0", _no_setup, "quantize --qat-epochs 0", 2, "--qat-epochs must be >= 1"),
    ("qat float16", _no_setup, "quantize --quantize float16 --qat", 2, "--qat needs"),
    ("opset 3", _no_setup, "export --opset 3", 2, "--opset must be >= 13"),
    ("opset 10", _no_setup, "export --opset 10", 2, "--opset must be >= 13 and <= 21"),
    ("batch size overflow", _no_setup, "train --batch-size 73786976294838206464", 2,
     "--batch-size must be >= 1 and <= 1000000"),
    ("max bytes 0", _no_setup, "verify --max-bytes 0", 2, "--max-bytes must be >= 1"),
    ("max drop nan", _no_setup, "verify --max-drop nan", 2, "finite number (got nan)"),
    ("max drop negative", _no_setup, "verify --max-drop -1", 2, "--max-drop must be >= 0"),
    ("min accuracy 1.5", _no_setup, "verify --min-accuracy 1.5", 2, "<= 1 (got 1.5)"),
    ("gate runtimes", _no_setup, "verify --gate-runtimes nativ", 2, "did you mean 'native'"),
    ("micro images -1", _no_setup, "verify --micro-images -1", 2, "--micro-images must be >= 0"),
    ("channel allocation", _no_setup, "prune --prune channels --channel-sparsity 0.2 "
     "--channel-allocation greedy", 2, "--channel-allocation"),
    ("build sparsity 1", _no_setup, "build --sparsity 1", 2, "--sparsity must be"),
    ("data missing", _no_setup, "train --data {d}/nowhere", 2, "data source does not exist"),
    ("data not a source", _text_file_as_data, "train --data {d}/x.txt", 2,
     "not a recognised data source"),
    ("no test split", _no_test_split, "train --data {d}", 2, "test: folder is missing"),
    ("corrupt image", _corrupt_image, "train --data {d}", 2, "unreadable or corrupt image"),
    ("prune without a model", _empty_folder, "prune", 2, "trained.h5: not found"),
    ("export without quantize", _empty_folder, "export", 2, "quantize.json"),
    ("compare without a build", _empty_folder, "compare {a}", 2, "train.json"),
    ("labels deleted", _delete("labels.txt"), "verify", 2,
     "labels.txt: missing (verify needs it): run `edgefire export` again"),
    ("int8 tflite truncated", _truncate("squeezenet_int8.tflite"), "verify", 2,
     "squeezenet_int8.tflite: bytes do not match the manifest"),
    ("onnx byte flipped", _flip_byte("squeezenet_int8.onnx"), "verify", 2,
     "run `edgefire export` again"),
    ("pruned model damaged", _truncate("pruned.h5"), "quantize", 2,
     "pruned.h5: bytes do not match"),
    ("manifest deleted", _delete("manifest.json"), "verify", 2, "manifest.json: missing"),
    ("manifest garbage", _write("manifest.json", "{not json"), "verify", 2,
     "manifest is unreadable"),
    ("manifest old schema", _old_schema, "verify", 2, "manifest schema 0"),
    ("export metadata garbage", _write("export.json", "[1, 2"), "verify", 2,
     "export.json: bytes do not match the manifest"),
    ("report forged", _forge_report, "compare {a}", 2, "report.json: bytes do not match"),
    ("unknown dense layer", _no_setup, "prune --keep-dense conv,nosuchlayer", 2,
     "--keep-dense names layers the model does not have"),
    ("artifacts inside the data", _no_setup, "build --data {d} --artifacts {d}/train/out", 2,
     "is inside the data source"),
    ("artifacts is the data", _no_setup, "train --data {d} --artifacts {d}", 2,
     "edgefire never writes into your data"),
    ("data inside artifacts", _data_inside_artifacts,
     "build --data {a}/../artifacts/x --artifacts {a}/..", 2, "is inside --artifacts"),
    ("prune learning rate 0", _no_setup, "build --prune-learning-rate 0", 2,
     "--prune-learning-rate must be > 0"),
    ("build prune epochs 0", _no_setup, "build --prune-epochs 0", 2,
     "error: --prune-epochs must be >= 1"),
    ("qat learning rate 0", _no_setup, "quantize --qat-learning-rate 0", 2,
     "--qat-learning-rate must be > 0"),
    ("head epochs without a model", _no_setup, "train --head-epochs 2", 2,
     "--head-epochs trains a given model's new head alone"),
    ("head epochs as it is", _no_setup, "train --model {d}/m.h5 --epochs 0 --head-epochs 2", 2,
     "--head-epochs needs --epochs >= 1"),
    ("model and arch", _no_setup, "build --model {d}/m.h5 --arch squeezenet32", 2,
     "--model and --arch squeezenet32 both say which model to start from"),
    ("build data missing", _no_setup, "build --data {d}/nowhere", 2,
     "data source does not exist"),
    ("model missing", _no_setup, "train --model {d}/nowhere.h5 --data {d}", 2,
     "model file not found"),
    ("model a text file", _text_file_as_data, "train --model {d}/x.txt --data {d}", 2,
     "not a model file edgefire reads"),
    ("verify no folder", _no_setup, "verify --artifacts {a}/missing", 2,
     "/missing: no such folder"),
    ("teacher missing", _no_setup, "train --teacher {d}/nowhere.h5 --data {d}", 2,
     "nowhere.h5: not found"),
    ("teacher with epochs 0", _no_setup, "train --model {d}/m.h5 --epochs 0 --teacher {d}", 2,
     "--teacher needs --epochs >= 1"),
    ("model a pytorch pickle", _writes("m.pt", b"PK\x03\x04"),
     "train --model {d}/m.pt --data {d}", 2, "a PyTorch pickle, which runs code when it is read"),
    ("model a pytorch exported program", _writes("m.pt2", b"PK\x03\x04"),
     "train --model {d}/m.pt2 --data {d}", 2,
     "a PyTorch ExportedProgram, whose weights torch unpickles, which runs code"),
    ("onnx garbage", _writes("m.onnx", b"not a protobuf at all"),
     "train --model {d}/m.onnx --data {d}", 2, "m.onnx: not a"),
    ("artifacts is a file", _no_setup, "train --data {d} --artifacts {a}/report.json/x", 2,
     "cannot create artifacts folder"),
]


def snapshot(*folders: Path) -> dict:
    """sha256 of every file under its final name (temporaries are dot-names)."""
    return {str(p): artifacts.sha256(p) for folder in folders if folder.exists()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}


# the cases that damage or read a finished build's files; the others need no build (fast tier)
ON_A_BUILD = {"labels deleted", "int8 tflite truncated", "onnx byte flipped",
              "pruned model damaged", "manifest deleted", "manifest garbage",
              "manifest old schema", "export metadata garbage", "report forged",
              "unknown dense layer", "artifacts is a file"}


@pytest.mark.parametrize("case", [c for c in CASES if c[0] not in ON_A_BUILD],
                         ids=[c[0] for c in CASES if c[0] not in ON_A_BUILD])
def test_a_bad_option_or_source_is_one_line_and_changes_nothing(case, image_folder, tmp_path):
    folder = tmp_path / "artifacts"
    folder.mkdir()
    check(case, folder, Path(shutil.copytree(image_folder, tmp_path / "data")))


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in ON_A_BUILD],
                         ids=[c[0] for c in CASES if c[0] in ON_A_BUILD])
def test_a_damaged_build_is_one_line_with_its_exit_code_and_changes_nothing(case, built,
                                                                           image_folder,
                                                                           tmp_path):
    check(case, Path(shutil.copytree(built, tmp_path / "artifacts")),
          Path(shutil.copytree(image_folder, tmp_path / "data")))


def check(case, folder: Path, data: Path) -> None:
    """One `edgefire: error:` line holding the needle, the exit code, no file changed."""
    _, setup, command, code, needle = case
    setup(folder, data)
    args = command.format(a=folder, d=data).split()
    if "--artifacts" not in " ".join(args) and args[0] != "compare":
        args += ["--artifacts", str(folder)]
    before = snapshot(folder, data)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.output.splitlines() if line.startswith("edgefire: error:")]
    assert len(errors) == 1, result.output
    assert needle in errors[0], errors[0]
    assert "Traceback" not in result.output
    assert snapshot(folder, data) == before
