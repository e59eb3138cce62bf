"""ONNX files written by PyTorch's own exporters (tests/fixtures/torch, made by
tests/fixtures/export_torch.py with torch 2.13): the TorchScript exporter at opsets 13 and 17
and the dynamo exporter at opset 18, of a MobileNetV3-like and a ResNet-like classifier; and
torchvision's own squeezenet1_1 and mobilenet_v3_small, trained briefly on CIFAR-10
(tests/fixtures/torchvision, made by tests/fixtures/train_torchvision.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from edgefire import data
from edgefire.models import from_onnx

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "torch").glob("*.onnx"))
TORCHVISION = Path(__file__).parent / "fixtures" / "torchvision"


@pytest.fixture(scope="module")
def images(image_folder) -> np.ndarray:
    """Model inputs (pixel / 255, NHWC) of varied images: the synthetic test split."""
    return data.load(str(image_folder)).x_test[:64].astype(np.float32) / 255


def test_every_exporter_and_opset_is_here():
    names = {p.stem for p in FIXTURES}
    for model in ("mobilenet_like", "resnet_like"):
        assert {f"{model}_torchscript_opset13", f"{model}_torchscript_opset17",
                f"{model}_dynamo_opset18"} <= names


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_a_pytorch_export_converts_to_the_same_function_node_by_node(path, images):
    model = from_onnx.read(path)
    described = from_onnx.describe(model)
    assert described["producer"].startswith("pytorch")
    assert described["opset"] == int(re.search(r"opset(\d+)", path.stem).group(1))
    converted, logits = from_onnx.convert(model, path, 32)
    assert logits == path.stem.startswith("mobilenet_like")  # the ResNet ends in a softmax
    # every node's output, in graph order, against onnxruntime's
    assert from_onnx.first_difference(model, path, 32, images[:8]) is None
    result = from_onnx.compare(path, converted, images, logits)
    assert result["agreement"] == 1.0 and result["max_score_difference"] < 1e-4
    theirs = from_onnx.onnxruntime_scores(path, images)
    assert theirs.std(axis=0).max() > 0.01  # the scores depend on the image


@pytest.mark.parametrize("path", sorted(TORCHVISION.glob("*.onnx")), ids=lambda p: p.stem)
def test_torchvisions_own_classifiers_convert_to_the_same_function(path, image_folder):
    facts = json.loads((TORCHVISION / "accuracy.json").read_text())
    pixels = data.load(str(image_folder)).x_test[:200].astype(np.float32)
    images = (pixels - np.float32(facts["mean"])) / np.float32(facts["std"])
    model = from_onnx.read(path)
    assert from_onnx.describe(model)["producer"].startswith("pytorch")
    converted, logits = from_onnx.convert(model, path, 32)
    assert logits
    result = from_onnx.compare(path, converted, images, logits)
    assert result["agreement"] == 1.0 and result["max_score_difference"] < 1e-4
    assert facts["files"][path.name]["onnxruntime_top1"] > 0.4  # trained, not chance


@pytest.mark.slow
def test_a_pytorch_mobilenet_builds_with_channel_pruning(image_folder, tmp_path):
    """Squeeze-and-excitation, hardswish, PReLU and SiLU are layers channel pruning thins
    through; every stage runs on the converted file."""
    from typer.testing import CliRunner

    from edgefire.cli import app

    path = next(p for p in FIXTURES if p.stem == "mobilenet_like_dynamo_opset18")
    folder = tmp_path / "built"
    result = CliRunner().invoke(app, [
        "build", "--quantize", "int8", "--model", str(path), "--data", str(image_folder),
        "--epochs", "1", "--batch-size", "32", "--prune", "channels", "--channel-sparsity",
        "0.3", "--prune-epochs", "1", "--max-drop", "100", "--micro-images", "20",
        "--artifacts", str(folder)])
    assert result.exit_code == 0, result.output
    given = json.loads((folder / "train.json").read_text())["given_model"]
    assert given["format"] == "onnx" and given["equality"]["agreement"] >= 0.995
    filters = json.loads((folder / "prune.json").read_text())["channels"]["filters"]
    assert any(f["kept"] < f["before"] for f in filters.values())
    assert (folder / "mcu" / "model_data.cc").exists()


def test_predict_normalizes_a_file_from_elsewhere_as_told(image_folder, tmp_path,
                                                          trained_folder):
    import shutil

    from typer.testing import CliRunner

    from edgefire.cli import app

    model = Path(shutil.copy(FIXTURES[0], tmp_path / "model.onnx"))
    (tmp_path / "labels.txt").write_text("".join(f"class {i}\n" for i in range(10)))
    image = sorted((image_folder / "test" / "ship").glob("*.png"))[0]
    result = CliRunner().invoke(app, ["predict", str(image), "--model", str(model), "--json",
                                      "--top", "10", "--mean", "127.5", "--std", "127.5"])
    assert result.exit_code == 0, result.output
    scores = {t["label"]: t["score"] for t in json.loads(result.stdout)[0]["top"]}
    pixels = data.read_image(image, 32).astype(np.float32)
    expected = from_onnx.softmax(from_onnx.onnxruntime_scores(model, (pixels[None] - 127.5)
                                                                / 127.5))[0]
    assert [scores[f"class {i}"] for i in range(10)] == pytest.approx(expected, abs=1e-5)
    own = CliRunner().invoke(app, ["predict", str(image), "--artifacts", str(trained_folder),
                                   "--model", str(trained_folder / "trained.h5"), "--mean",
                                   "127.5"])
    assert own.exit_code == 2
    assert "--mean and --std are for a model file from elsewhere" in own.output
