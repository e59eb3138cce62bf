"""Shared fixtures: synthetic datasets in every format and one small trained artifacts folder."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ["TF_USE_LEGACY_KERAS"] = "1"

from tests import synthetic  # noqa: E402

# A few epochs of the default recipe on the tiny learnable set: seconds, well above chance.
# 51 steps are too few for SGD's peak of 0.1 (a 60%-pruned model then fell to 50%), so half.
TINY_TRAIN = ["--epochs", "3", "--batch-size", "32", "--seed", "1", "--learning-rate", "0.05"]
BUILD = ["build", "--quantize", "int8", *TINY_TRAIN, "--prune-epochs", "1"]


END_TO_END = {"built", "built64"}  # fixtures that run a whole build


def pytest_collection_modifyitems(items):
    """Tests that need a whole build, or run builds themselves, are `slow`."""
    for item in items:
        if END_TO_END & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Decoded-array caches go to a temporary folder, never the user's ~/.cache."""
    os.environ["EDGEFIRE_CACHE"] = str(tmp_path_factory.mktemp("cache"))


def made_once(tmp_path_factory, name: str, make) -> Path:
    """`make(folder)` run once per test run, its folder shared by every pytest-xdist worker
    (each worker would otherwise build its own): the first worker to ask makes it under a
    lock, the others wait for it. Tests never change these folders (they copy them)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            make(folder)
            done.touch()
    return folder


def made_by_command(tmp_path_factory, name: str, source: Path, *command: str) -> Path:
    """A copy of the folder `source` after `edgefire COMMAND --artifacts COPY` (made once)."""
    from typer.testing import CliRunner

    from edgefire.cli import app

    def make(folder):
        shutil.copytree(source, folder)
        result = CliRunner().invoke(app, [*command, "--artifacts", str(folder)])
        assert result.exit_code == 0, result.output

    return made_once(tmp_path_factory, name, make)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return made_once(tmp_path_factory, "images",
                     lambda folder: synthetic.write_image_folder(folder / "colours")) / "colours"


@pytest.fixture(scope="session")
def cifar_folder(tmp_path_factory) -> Path:
    return synthetic.write_cifar_folder(tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py")


@pytest.fixture(scope="session")
def cifar_archive(tmp_path_factory) -> Path:
    return synthetic.write_cifar_archive(tmp_path_factory.mktemp("archive") /
                                         "cifar-10-python.tar.gz")


@pytest.fixture(scope="session")
def trained_folder(tmp_path_factory, image_folder) -> Path:
    """An artifacts folder after `edgefire train` on the tiny image folder (made once)."""
    from typer.testing import CliRunner

    from edgefire.cli import app

    def make(folder):
        result = CliRunner().invoke(app, ["train", "--data", str(image_folder), "--artifacts",
                                          str(folder), *TINY_TRAIN])
        assert result.exit_code == 0, result.output

    return made_once(tmp_path_factory, "trained", make)


@pytest.fixture(scope="session")
def built(image_folder, tmp_path_factory) -> Path:
    """An artifacts folder after a whole `edgefire build` on the tiny image folder."""
    from typer.testing import CliRunner

    from edgefire.cli import app

    def make(folder):
        result = CliRunner().invoke(app, [*BUILD, "--data", str(image_folder), "--artifacts",
                                          str(folder / "artifacts")])
        assert result.exit_code == 0, result.output

    return made_once(tmp_path_factory, "built", make) / "artifacts"


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgefire.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epochs(folder: Path, stage: str, epochs: int, process, timeout: float = 300):
    state = folder / f"{stage}_checkpoint.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if state.exists() and json.loads(state.read_text())["epochs_done"] >= epochs:
            return
        time.sleep(0.2)
    raise AssertionError(f"{stage} never finished {epochs} epoch(s): {process.poll()}")


KILLED_TRAIN = ["train", "--epochs", "4", "--batch-size", "32"]


@pytest.fixture(scope="session")
def killed_training(image_folder, tmp_path_factory) -> Path:
    """A folder whose 4-epoch `train` (KILLED_TRAIN) was SIGKILLed after its first epoch was
    saved (made once; tests resume copies of it)."""
    def make(folder):
        process = start(*KILLED_TRAIN, "--data", str(image_folder), "--artifacts", str(folder))
        wait_for_epochs(folder, "train", 1, process)
        process.kill()  # SIGKILL: no chance to clean up
        process.wait()

    return made_once(tmp_path_factory, "killed_training", make)


@pytest.fixture
def copy_of(tmp_path):
    """Copy a session folder so a test may change it without touching the others."""

    def copy(folder: Path) -> Path:
        return Path(shutil.copytree(folder, tmp_path / folder.name))

    return copy
