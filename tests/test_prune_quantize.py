"""`edgefire prune` and `edgefire quantize` on the tiny learnable set."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from typer.testing import CliRunner

from edgefire import contract, data, formats, mcu, models, runtimes
from edgefire.cli import app
from tests.conftest import made_by_command


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="session")
def pruned_folder(trained_folder, tmp_path_factory):
    """The trained folder pruned to 60% (made once per test run)."""
    return made_by_command(tmp_path_factory, "pruned60", trained_folder, "prune",
                           "--sparsity", "0.6", "--epochs", "2")


@pytest.fixture(scope="session")
def quantized_folder(pruned_folder, tmp_path_factory):
    """The pruned folder after an int8 `quantize` from 100 calibration images (tests read it)."""
    return made_by_command(tmp_path_factory, "quantized60", pruned_folder, "quantize",
                           "--calibration-samples", "100")


def test_pruned_layers_reach_the_target_within_one_point(pruned_folder):
    meta = json.loads((pruned_folder / "prune.json").read_text())
    assert set(meta["sparsity"]["layers"]) == {f"fire{i}/{p}" for i in range(2, 6)
                                               for p in ("squeeze1x1", "expand1x1", "expand3x3")}
    for layer, zeros in meta["sparsity"]["layers"].items():
        assert abs(zeros - 0.6) <= 0.01, (layer, zeros)
    assert meta["val_accuracy_after"] > 0.5


def test_keep_dense_layers_stay_dense(pruned_folder):
    from edgefire.models import kernel_sparsity, load_model

    pruned = load_model(pruned_folder / "pruned.h5")
    sparsity = kernel_sparsity(pruned)["layers"]
    assert sparsity["conv"] < 0.05 and sparsity["conv10"] < 0.05
    assert pruned.get_layer("drop9").rate == 0.5  # fine-tuned at training's rate, saved as 0.5


def _interpreter(path):
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def test_int8_has_int8_activations_and_raw_uint8_pixel_input(quantized_folder):
    interpreter = _interpreter(quantized_folder / "squeezenet_int8.tflite")
    tensor_in = interpreter.get_input_details()[0]
    assert tensor_in["dtype"] == np.uint8
    scale, zero_point = tensor_in["quantization"]
    assert math.isclose(scale, 1 / 255, rel_tol=1e-4) and zero_point == 0
    assert interpreter.get_output_details()[0]["dtype"] == np.uint8
    io = {tensor_in["index"], interpreter.get_output_details()[0]["index"]}
    inner = [t for t in interpreter.get_tensor_details() if t["index"] not in io]
    float_tensors = [t["name"] for t in inner if t["dtype"] == np.float32]
    assert not float_tensors
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "DEQUANTIZE" not in ops


def test_int8_io_option_gives_int8_input_with_zero_point_minus_128(pruned_folder, copy_of):
    folder = copy_of(pruned_folder)
    assert invoke("quantize", "--artifacts", str(folder), "--io", "int8").exit_code == 0
    tensor_in = _interpreter(folder / "squeezenet_int8.tflite").get_input_details()[0]
    assert tensor_in["dtype"] == np.int8
    assert math.isclose(tensor_in["quantization"][0], 1 / 255, rel_tol=1e-4)
    assert tensor_in["quantization"][1] == -128
    # the firmware pack follows the file's I/O type: int8 tensors, pixels shifted by -128
    pixels = np.arange(2 * 32 * 32 * 3, dtype=np.int64).reshape(2, 32, 32, 3) % 256
    classes = json.loads((folder / "train.json").read_text())["classes"]
    files, _ = mcu.from_tflite(folder / "squeezenet_int8.tflite", classes,
                               contract.InputContract(), pixels.astype(np.uint8), np.arange(2))
    settings = files["model_settings.h"].decode()
    assert "using InputType = int8_t;" in settings and "kInputZeroPoint = -128;" in settings
    assert "using OutputType = int8_t;" in settings
    first_values = files["golden.cc"].decode().split("{\n", 2)[2].split(",")[:3]
    assert [int(v) for v in first_values] == [-128, -127, -126]


def test_calibration_images_come_only_from_the_training_split(quantized_folder, image_folder):
    folder = quantized_folder
    calibration = json.loads((folder / "quantize.json").read_text())["calibration"]
    train_config = json.loads((folder / "train.json").read_text())["config"]
    splits = data.split(data.load(str(image_folder)), train_config["val_size"],
                        train_config["seed"], train_config["limit"])
    assert calibration["split"] == "train" and len(calibration["indices"]) == 100
    assert set(calibration["indices"]) <= set(splits.train_indices.tolist())
    assert not set(calibration["indices"]) & set(splits.val_indices.tolist())


def test_int8_accuracy_is_close_to_the_float_model(quantized_folder, image_folder):
    folder = quantized_folder
    ds = data.load(str(image_folder))
    float_acc = np.mean(runtimes.predict(runtimes.open_model(folder / "pruned.h5"), ds.x_test)
                        == ds.y_test)
    int8_acc = np.mean(runtimes.predict(runtimes.open_model(folder / "squeezenet_int8.tflite"),
                                        ds.x_test) == ds.y_test)
    assert float_acc > 0.5
    assert abs(float_acc - int8_acc) <= 0.05  # tolerance: 10 of 200 test images


def test_qat_on_a_pruned_model_keeps_its_zeros(built, copy_of):
    """On the shared build, pruned to 40%: below 50% zeros int8 is converted once (dense)."""
    folder = copy_of(built)
    result = invoke("quantize", "--artifacts", str(folder), "--qat", "--qat-epochs", "1",
                    "--qat-learning-rate", "0.0002")
    assert result.exit_code == 0, result.output
    meta = json.loads((folder / "quantize.json").read_text())
    assert meta["config"]["qat_learning_rate"] == 0.0002
    assert meta["qat_history"]["loss"] and meta["qat_recoveries"] == []
    for layer, zeros in meta["qat_sparsity"]["layers"].items():
        if layer.split("/")[-1].startswith(("squeeze", "expand")):  # the fire modules' layers
            assert zeros >= 0.39, (layer, zeros)  # a drift once left half in expand layers
    zeros, total = formats.FORMATS["tflite"].kernel_zeros(folder / "squeezenet_int8.tflite")
    assert zeros / total >= meta["sparsity"] - 0.01  # the shipped file has them too


@pytest.mark.parametrize("mode, weight_type", [("float16", np.float16), ("dynamic", np.int8)])
def test_float16_and_dynamic_modes(pruned_folder, copy_of, mode, weight_type):
    folder = copy_of(pruned_folder)
    assert invoke("quantize", "--artifacts", str(folder), "--quantize", mode).exit_code == 0
    interpreter = _interpreter(folder / f"squeezenet_{mode}.tflite")
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert any(t["dtype"] == weight_type for t in interpreter.get_tensor_details())


@pytest.mark.parametrize("args, needle", [
    (["prune", "--sparsity", "1.2"], "--sparsity must be >= 0 and < 1 (got 1.2)"),
    (["prune", "--epochs", "0"], "--epochs must be >= 1 and <= 10000 (got 0)"),
    (["quantize", "--quantize", "int4"], "did you mean 'int8'"),
    (["quantize", "--calibration-samples", "0"], "--calibration-samples must be >= 1"),
    (["quantize", "--io", "uint16"], "did you mean 'uint8'"),
    (["quantize", "--quantize", "float16", "--qat"], "--qat needs --quantize int8"),
])
def test_bad_options_exit_2_with_one_line(args, needle, tmp_path):
    result = invoke(*args, "--artifacts", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", ["prune", "quantize", "export", "verify"])
def test_stage_without_its_inputs_says_what_to_run(command, tmp_path):
    result = invoke(command, "--artifacts", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert "not found" in result.output and str(tmp_path) in result.output


def test_default_dense_layers_are_any_models_own_first_and_last_convolutions():
    from edgefire.config import PruneConfig
    from edgefire.stages.prune import dense_layers_of

    config = dense_layers_of(PruneConfig(), models.build("resnet8"))
    assert config.keep_dense == ("conv", "stack3/conv2")
    assert dense_layers_of(PruneConfig(), models.build("squeezenet")) == PruneConfig()
