"""Repair paths: a damaged build is rebuilt by `edgefire build`, a stale or incomplete set is
never certified, damaged caches and checkpoints heal, and failures leave whole sets."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefire import artifacts
from edgefire.cli import app
from edgefire.errors import EdgefireError
from tests.conftest import BUILD, KILLED_TRAIN, made_by_command
from tests.test_pipeline import DEPLOYABLES

PRODUCTS = [*DEPLOYABLES, "trained.h5", "pruned.h5", "labels.txt"]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path: Path) -> None:
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))


DAMAGE = {
    "labels.txt deleted": ("labels.txt", Path.unlink),
    "int8 tflite truncated": ("squeezenet_int8.tflite", _truncate),
    "int8 onnx byte flipped": ("squeezenet_int8.onnx", _flip),
    "float onnx deleted": ("squeezenet_float32.onnx", Path.unlink),
    "trained.h5 truncated": ("trained.h5", _truncate),
    "pruned.h5 byte flipped": ("pruned.h5", _flip),
    "report.json edited": ("report.json", lambda p: p.write_text("{}")),
    "report.png deleted": ("report.png", Path.unlink),
    "quantize.json deleted": ("quantize.json", Path.unlink),
}


# the first stage a build reruns for each damage
FIRST_RERUN = {"labels.txt deleted": "export", "int8 tflite truncated": "quantize",
               "int8 onnx byte flipped": "export", "float onnx deleted": "export",
               "trained.h5 truncated": "train", "pruned.h5 byte flipped": "prune",
               "report.json edited": "verify", "report.png deleted": "verify",
               "quantize.json deleted": "quantize"}
# one damage per kind of rerun goes through a whole rebuild (each one takes a build)
REBUILT = ("pruned.h5 byte flipped", "labels.txt deleted", "report.json edited")


def first_stale(folder: Path, image_folder: Path) -> str | None:
    """The first stage `build` (with conftest's BUILD flags) would run again in `folder`."""
    from edgefire import api, pipeline
    from edgefire.errors import EdgefireError

    settings = {"train": {"data": str(image_folder), "epochs": 3, "batch_size": 32,
                          "seed": 1, "learning_rate": 0.05},
                "prune": {"epochs": 1}, "quantize": {"mode": "int8"}}
    for stage in pipeline.steps(api.plan(settings)):
        try:
            if not artifacts.stage_is_current(folder, stage.name, stage.inputs(folder),
                                              stage.config):
                return stage.name
        except EdgefireError:  # an input of this stage is damaged: its maker reruns first
            return stage.name
    return None


def test_every_damaged_file_reruns_the_stage_that_made_it(built, image_folder, copy_of):
    assert first_stale(built, image_folder) is None
    for damage, (name, harm) in DAMAGE.items():
        folder = copy_of(built)
        harm(folder / name)
        assert first_stale(folder, image_folder) == FIRST_RERUN[damage], damage
        shutil.rmtree(folder)


@pytest.mark.parametrize("damage", REBUILT)
def test_build_repairs_a_damaged_file_and_makes_the_same_bytes(damage, built, image_folder,
                                                               copy_of):
    folder = copy_of(built)
    before = {name: artifacts.sha256(folder / name) for name in PRODUCTS}
    name, harm = DAMAGE[damage]
    harm(folder / name)
    result = invoke(*BUILD, "--data", str(image_folder), "--artifacts", str(folder))
    assert result.exit_code == 0, result.output
    assert "build passed" in result.output and "Traceback" not in result.output
    assert {name: artifacts.sha256(folder / name) for name in PRODUCTS} == before
    result = invoke(*BUILD, "--data", str(image_folder), "--artifacts", str(folder),
                    "--dry-run")  # whole again: a second build would run nothing
    assert result.output.count(": up to date") == 5, result.output


@pytest.fixture(scope="session")
def requantized(built, tmp_path_factory) -> Path:
    """The shared build after a second `quantize` (other calibration): the int8 TFLite is
    newer than the files export made from it (made once; tests only read it)."""
    return made_by_command(tmp_path_factory, "requantized", built, "quantize",
                           "--calibration-samples", "100")


def test_verify_refuses_an_int8_onnx_made_from_an_older_int8_tflite(requantized):
    folder = requantized
    result = invoke("verify", "--artifacts", str(folder))
    assert result.exit_code == 2  # the file made from it, not the float ones made beside it
    assert result.output.strip() == (f"edgefire: error: {folder}/squeezenet_int8.onnx: made "
                                     "from an older squeezenet_int8.tflite: run `edgefire "
                                     "export` again")


def test_compare_refuses_a_report_whose_files_changed_since(requantized):
    result = invoke("compare", str(requantized))
    assert result.exit_code == 2 and "made from an older" in result.output


def test_a_failed_verify_keeps_the_whole_old_report(built, copy_of, monkeypatch):
    """The disk fills up after report.json's temporary is written: no new file lands."""
    folder = copy_of(built)
    before = {n: artifacts.sha256(folder / n) for n in ("report.json", "report.md", "report.png")}
    calls = []
    real_fsync = os.fsync

    def second_fsync_fails(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", second_fsync_fails)
    result = invoke("verify", "--artifacts", str(folder))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if "edgefire: error:" in line]
    assert errors == [f"edgefire: error: {folder}/report.md: cannot write (No space left on "
                      "device)"]
    after = {n: artifacts.sha256(folder / n) for n in before}
    assert after == before
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]


def test_build_force_starts_over_from_an_unreadable_manifest_to_the_same_bytes(
        built, image_folder, copy_of):
    """A whole rebuild with the same seed makes byte-identical files."""
    folder = copy_of(built)
    (folder / "manifest.json").write_text("{truncated")
    result = invoke("verify", "--artifacts", str(folder))
    assert result.exit_code == 2 and "edgefire build --force" in result.output
    result = invoke(*BUILD, "--data", str(image_folder), "--artifacts", str(folder), "--force")
    assert result.exit_code == 0, result.output
    assert "starting over" in result.output and "up to date" not in result.output
    assert (folder / "manifest.json.unreadable").read_text() == "{truncated"
    for name in DEPLOYABLES + ["trained.h5", "pruned.h5", "labels.txt"]:
        assert artifacts.sha256(folder / name) == artifacts.sha256(built / name), name
    val = [json.loads((f / "train.json").read_text())["val_accuracy"] for f in (folder, built)]
    assert val[0] == val[1]


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_cache_entry_is_decoded_again(damage, image_folder, tmp_path, monkeypatch):
    from edgefire import data

    monkeypatch.setenv("EDGEFIRE_CACHE", str(tmp_path / "cache"))
    first = data.load(str(image_folder))
    entry = next((tmp_path / "cache").glob("*.npz"))
    whole = entry.read_bytes()
    entry.write_bytes(whole[:1000] if damage == "truncated" else b"")
    again = data.load(str(image_folder))
    assert (again.x_train == first.x_train).all() and again.classes == first.classes
    with zipfile.ZipFile(entry) as healed:  # written again, whole (its zip times may differ)
        assert healed.testzip() is None and entry.stat().st_size == len(whole)


@pytest.mark.parametrize("damage", ["state garbage", "weights truncated"])
def test_a_damaged_checkpoint_is_discarded_and_training_starts_over(damage, killed_training,
                                                                     image_folder, copy_of):
    folder = copy_of(killed_training)
    if damage == "state garbage":
        (folder / "train_checkpoint.json").write_text("{garbage")
    else:
        _truncate(folder / "train_checkpoint.h5")
    result = invoke(*KILLED_TRAIN, "--data", str(image_folder), "--artifacts", str(folder))
    assert result.exit_code == 0, result.output
    assert "damaged checkpoint discarded" in result.output
    meta = json.loads((folder / "train.json").read_text())
    assert meta["epochs_run"] == 4 and len(meta["history"]["loss"]) == 4


def test_a_checkpoint_of_other_settings_is_named_and_training_starts_over(killed_training,
                                                                         image_folder, copy_of):
    folder = copy_of(killed_training)
    args = [*KILLED_TRAIN[:-1], "16", "--data", str(image_folder), "--artifacts", str(folder)]
    result = invoke(*args)  # the killed run's --batch-size 32, now 16
    assert result.exit_code == 0, result.output
    assert "train_checkpoint.*: made with other settings (batch_size 32 -> 16); train starts " \
           "over" in result.output
    assert "resuming" not in result.output and result.output.count("Epoch ") == 4


def test_diverging_training_stops_with_one_line_and_saves_nothing(image_folder, tmp_path):
    folder = tmp_path / "a"
    result = invoke("train", "--data", str(image_folder), "--artifacts", str(folder),
                    "--epochs", "2", "--batch-size", "32", "--learning-rate", "1e30")
    assert result.exit_code == 2, result.output
    assert "train diverged 4 times, the last in epoch 1" in result.output
    assert "loss nan" in result.output and "--learning-rate on train and build" in result.output
    assert result.output.count("restarting after epoch 0") == 3  # at 1/2, 1/4, 1/8
    assert not (folder / "trained.h5").exists() and not (folder / "history.json").exists()


def test_tensorflow_start_up_noise_is_silenced_and_verbose_brings_it_back(built, copy_of,
                                                                         image_folder):
    folder = copy_of(built)
    command = [sys.executable, "-m", "edgefire.cli"]
    # the converter's own lines; prune's (tf.data's E0000) are test_distribute's mirrored prune's
    quiet = subprocess.run([*command, "quantize", "--artifacts", str(folder)],
                           capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    image = next((image_folder / "test" / "cat").iterdir())  # TensorFlow's start-up alone
    loud = subprocess.run([*command, "--verbose", "predict", str(image), "--model",
                           str(folder / "pruned.h5"), "--artifacts", str(folder)],
                          capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0 and loud.stderr != "", loud.stderr


@pytest.mark.parametrize("log", ["{}", '{"stages": [], "seconds": 5}',
                                 '{"stages": {"train": {"status": "ran"}}, "seconds": 1}'])
def test_compare_refuses_a_hand_edited_build_log(built, copy_of, log):
    folder = copy_of(built)
    (folder / "build.json").write_text(log)
    result = invoke("compare", str(folder))
    assert result.exit_code == 2 and "build.json: bytes do not match the manifest" in \
        result.output, result.output


def test_compare_ignores_a_build_log_the_manifest_does_not_record(built, copy_of):
    folder = copy_of(built)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["artifacts"]["build.json"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "build.json").write_text('{"stages": {"train": {"status": "ran"}}, "seconds": 1}')
    result = invoke("compare", str(folder))
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("| - |")  # no build time: the forged 1 s is not shown


def _fails(stage):
    def run(*args, **kwargs):
        raise EdgefireError(f"{stage} failed here")

    return run


@pytest.mark.parametrize("stage, change, injected", [
    ("train", ["--data", "{data}/nowhere", "--sparsity", "0"], False),  # a real bad input
    ("prune", ["--keep-dense", "conv,nosuchlayer"], False),  # a real failure in prune
    ("quantize", ["--sparsity", "0"], True),  # quantizes the trained model: prune's turn
    ("export", ["--opset", "14"], True),
    ("verify", ["--max-bytes", "400000"], True),
])
def test_a_build_failing_at_any_stage_leaves_the_manifest_byte_identical(
        stage, change, injected, built, image_folder, copy_of, monkeypatch):
    import importlib

    folder = copy_of(built)
    before = (folder / "manifest.json").read_bytes()
    if injected:
        monkeypatch.setattr(importlib.import_module(f"edgefire.stages.{stage}"), "run",
                            _fails(stage))
    args = [*BUILD, "--data", str(image_folder), "--artifacts", str(folder),
            *[a.format(data=image_folder) for a in change]]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert (folder / "manifest.json").read_bytes() == before
    monkeypatch.undo()  # every file as the manifest records it: the build is whole
    result = invoke(*BUILD, "--data", str(image_folder), "--artifacts", str(folder),
                    "--dry-run")
    assert result.output.count(": up to date") == 5, result.output


def test_a_failed_first_build_leaves_no_folder(image_folder, tmp_path):
    folder = tmp_path / "new"
    result = invoke("build", "--data", str(tmp_path / "nowhere"), "--artifacts", str(folder))
    assert result.exit_code == 2 and "data source does not exist" in result.output
    assert "> train" not in result.output and not folder.exists()
    result = invoke(*BUILD, "--data", str(image_folder), "--artifacts", str(folder),
                    "--model", str(tmp_path / "missing.h5"))
    assert result.exit_code == 2 and "model file not found" in result.output
    assert not folder.exists()
