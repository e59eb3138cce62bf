"""Kills, interrupts, full disks, edited files and byte-identical rebuilds."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefire import artifacts
from edgefire.cli import app
from edgefire.errors import EdgefireError
from tests.conftest import KILLED_TRAIN, start, wait_for_epochs


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def hashes(folder: Path) -> dict:
    return {p.name: artifacts.sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


def test_killed_training_resumes_from_its_last_epoch(killed_training, image_folder, copy_of):
    folder = copy_of(killed_training)
    done = json.loads((folder / "train_checkpoint.json").read_text())["epochs_done"]
    assert 1 <= done < 4 and not (folder / "trained.h5").exists()
    result = invoke(*KILLED_TRAIN, "--data", str(image_folder), "--artifacts", str(folder))
    assert result.exit_code == 0, result.output
    assert f"resuming train after epoch {done}" in result.output
    meta = json.loads((folder / "train.json").read_text())
    history = meta["history"]
    assert len(history["loss"]) == len(history["val_accuracy"]) == 4  # no duplicated epochs
    assert result.output.count("Epoch ") == 4 - done  # only the missing epochs ran
    assert meta["epochs_run"] == 4 - done and meta["epochs"] == 4  # its speed: of those
    assert len(history["epoch_seconds"]) == 4  # its cost: the killed run's epochs too
    assert meta["fit_seconds"] == round(sum(history["epoch_seconds"]), 1) > 0


@pytest.mark.parametrize("sent, code, message", [
    (signal.SIGINT, 130, "edgefire: interrupted; finished artifacts are intact"),
    (signal.SIGTERM, 143, "edgefire: terminated (SIGTERM); finished artifacts are intact")])
def test_a_signal_exits_with_its_code_and_one_line_and_keeps_the_checkpoint(
        sent, code, message, image_folder, tmp_path):
    folder = tmp_path / "a"
    process = start("train", "--data", str(image_folder), "--artifacts", str(folder),
                    "--epochs", "40", "--batch-size", "32")  # far from done when signalled
    wait_for_epochs(folder, "train", 1, process)
    process.send_signal(sent)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert stderr.strip() == message
    assert json.loads((folder / "train_checkpoint.json").read_text())["epochs_done"] >= 1


def test_export_failing_midway_leaves_the_previous_set_and_manifest(built, copy_of,
                                                                   monkeypatch):
    """Export at another opset (new bytes) dies after writing two of its files: none of them
    lands, the manifest is untouched, no temporary is left behind."""
    folder = copy_of(built)
    before = hashes(folder)
    written = []
    real_write = artifacts.write_bytes

    def dies_on_the_third(path, content):
        if len(written) == 2:
            raise EdgefireError(f"{path}: cannot write (simulated crash)")
        written.append(path.name)
        real_write(path, content)

    monkeypatch.setattr(artifacts, "write_bytes", dies_on_the_third)
    result = invoke("export", "--artifacts", str(folder), "--opset", "14")
    assert result.exit_code == 2 and len(written) == 2, result.output
    assert hashes(folder) == before
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"good old model")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(EdgefireError, match="model.tflite: cannot write .No space left"):
        artifacts.write_bytes(path, b"new model that does not fit")
    assert path.read_bytes() == b"good old model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]


def test_full_disk_during_verify_is_one_line_and_keeps_the_report(built, copy_of,
                                                                   monkeypatch):
    folder = copy_of(built)
    report = (folder / "report.json").read_bytes()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    result = invoke("verify", "--artifacts", str(folder))
    assert result.exit_code == 2
    assert result.output.strip().endswith("cannot write (No space left on device)")
    assert (folder / "report.json").read_bytes() == report


def test_unwritable_artifacts_folder_is_one_line(tmp_path, monkeypatch, image_folder):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke("train", "--data", str(image_folder), "--artifacts", str(blocker / "a"))
    assert result.exit_code == 2 and "cannot create artifacts folder" in result.output
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # root ignores permissions
    result = invoke("train", "--data", str(image_folder), "--artifacts", str(tmp_path / "b"))
    assert result.exit_code == 2 and "artifacts folder is not writable" in result.output


def test_older_manifest_schema_is_refused_with_what_to_do(built, copy_of):
    folder = copy_of(built)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["schema"] = 0
    (folder / "manifest.json").write_text(json.dumps(manifest))
    result = invoke("verify", "--artifacts", str(folder))
    assert result.exit_code == 2
    assert "manifest schema 0" in result.output and "--force" in result.output


def test_a_disk_too_full_for_a_checkpoint_stops_train_with_one_line(image_folder, tmp_path,
                                                                   monkeypatch):
    """HDF5 crashes the process on a full disk, so the room is checked before writing."""
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(artifacts.shutil, "disk_usage",
                        lambda path: usage._replace(free=500_000))
    folder = tmp_path / "a"
    result = invoke("train", "--data", str(image_folder), "--epochs", "1", "--artifacts",
                    str(folder))
    assert result.exit_code == 2, result.output
    assert "train_checkpoint.h5: No space left on device: writing it needs about" in \
        result.output
    assert result.output.count("edgefire: error") == 1
    assert not [p for p in folder.iterdir() if p.suffix == ".h5" or ".tmp" in p.name]


def test_a_supervised_worker_ended_by_a_signal_exits_as_a_shell_says():
    from edgefire.cli import exit_status

    assert exit_status(-signal.SIGTERM) == 143 and exit_status(-signal.SIGKILL) == 137
    assert exit_status(2) == 2 and exit_status(0) == 0
