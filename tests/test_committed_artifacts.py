"""The builds committed under artifacts/ match their own reports, read from git (HEAD), so a
user's own `make all` into artifacts/ changes nothing here."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgefire.bench import front
from edgefire.cli import app

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                          check=True).stdout


def committed(path: str) -> bytes:
    """A file as committed at HEAD."""
    return _git("show", f"HEAD:{path}")


def committed_reports() -> list[str]:
    try:
        names = _git("ls-tree", "-r", "--name-only", "HEAD", "artifacts").decode().split()
    except (OSError, subprocess.CalledProcessError):
        return []  # not a git checkout (an sdist): nothing committed to check
    return sorted(n for n in names if n.endswith("/report.json") or n == "artifacts/report.json")


REPORTS = committed_reports()
pytestmark = pytest.mark.skipif(not REPORTS, reason="no committed builds (not a git checkout)")


@pytest.mark.parametrize("report_path", REPORTS)
def test_committed_reports_match_committed_files(report_path):
    report = json.loads(committed(report_path))
    folder = Path(report_path).parent
    shipped = [a for a in report["artifacts"] if a["format"] != "keras"]  # Keras stays local
    assert {a["format"] for a in shipped} == {"tflite", "onnx"}
    for artifact in shipped:
        content = committed(str(folder / artifact["path"]))
        assert len(content) == artifact["bytes"], artifact["name"]
        assert hashlib.sha256(content).hexdigest() == artifact["sha256"], artifact["name"]


def test_committed_reference_meets_the_targets():
    report = json.loads(committed("artifacts/report.json"))
    assert report["passed"] and report["dataset"]["test_images"] == 10_000
    int8 = next(a for a in report["artifacts"] if a["name"] == "squeezenet_int8.tflite")
    assert int8["bytes"] < 500_000 and int8["accuracy"] >= 0.80  # issue #5's goal
    labels = committed("artifacts/labels.txt").decode().split()
    assert labels == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                      "ship", "truck"]


CIFAR_JPEG = ROOT.parent / "shared" / "data" / "cifar10-jpeg"


@pytest.mark.skipif(not (CIFAR_JPEG / "test").is_dir(), reason="no CIFAR-10 (JPEG copy) here")
def test_the_committed_int8_tflite_scores_what_its_report_says(tmp_path):
    """Measured again, without edgefire's code: Pillow decodes the test split, the LiteRT
    interpreter runs the committed file, one image at a time."""
    from ai_edge_litert.interpreter import Interpreter
    from PIL import Image

    model = tmp_path / "int8.tflite"
    model.write_bytes(committed("artifacts/squeezenet_int8.tflite"))
    labels = committed("artifacts/labels.txt").decode().split()
    interpreter = Interpreter(model_path=str(model), num_threads=1)
    interpreter.allocate_tensors()
    given, = interpreter.get_input_details()
    scores, = interpreter.get_output_details()
    right = total = 0
    for index, label in enumerate(labels):
        for image in sorted((CIFAR_JPEG / "test" / label).glob("*.jpg")):
            pixels = np.asarray(Image.open(image).convert("RGB"), dtype=np.uint8)
            interpreter.set_tensor(given["index"], pixels[None])
            interpreter.invoke()
            right += int(np.argmax(interpreter.get_tensor(scores["index"])[0]) == index)
            total += 1
    report = json.loads(committed("artifacts/report.json"))
    int8 = next(a for a in report["artifacts"] if a["name"] == "squeezenet_int8.tflite")
    assert total == report["dataset"]["test_images"] == 10_000
    assert right / total == pytest.approx(int8["accuracy"], abs=1e-9)


@pytest.fixture(scope="module")
def committed_tree(tmp_path_factory) -> Path:
    """HEAD's artifacts/, extracted once (the working tree's may be a user's own rebuild)."""
    root = tmp_path_factory.mktemp("head")
    subprocess.run(["tar", "-x", "-C", str(root)], input=_git("archive", "HEAD", "artifacts"),
                   check=True)
    return root


@pytest.mark.skipif(not (CIFAR_JPEG / "train").is_dir(), reason="no CIFAR-10 (JPEG copy) here")
@pytest.mark.parametrize("folder", list(front.COMMANDS))
def test_each_committed_build_is_what_its_one_command_makes(folder, committed_tree,
                                                            monkeypatch):
    """Its command (`make front-builds`), run where HEAD's artifacts/ lies (a teacher is one
    of them), finds every stage of the committed build up to date: the files, the data and
    every option are what the command says."""
    monkeypatch.chdir(committed_tree)
    result = CliRunner().invoke(app, [*front.build_command(folder, CIFAR_JPEG), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would run" not in result.output and "= verify: up to date" in result.output, \
        result.output
