"""The reference build committed under artifacts/ matches its own report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgefire.artifacts import sha256

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
REPORT = ARTIFACTS / "report.json"
pytestmark = pytest.mark.skipif(not REPORT.exists(), reason="no committed reference build")


def test_committed_report_matches_committed_files():
    report = json.loads(REPORT.read_text())
    shipped = [a for a in report["artifacts"] if a["format"] != "keras"]  # Keras stays local
    assert {a["format"] for a in shipped} == {"tflite", "onnx"}
    for artifact in shipped:
        path = ARTIFACTS / artifact["path"]
        assert path.stat().st_size == artifact["bytes"], artifact["name"]
        assert sha256(path) == artifact["sha256"], artifact["name"]


def test_committed_reference_meets_the_targets():
    report = json.loads(REPORT.read_text())
    assert report["passed"] and report["dataset"]["test_images"] == 10_000
    int8 = next(a for a in report["artifacts"] if a["name"] == "squeezenet_int8.tflite")
    assert int8["bytes"] < 500_000
    labels = (ARTIFACTS / "labels.txt").read_text().split()
    assert labels == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                      "ship", "truck"]
