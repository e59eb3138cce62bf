"""Divergence: a run that blows up restarts at half the learning rate, or stops with advice
that names an option of the command the user ran; small datasets build at the defaults."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from edgefire import data, models
from edgefire.api import SECTIONS
from edgefire.cli import app
from edgefire.contract import InputContract
from edgefire.stages import fitting
from tests import synthetic
from tests.conftest import BUILD

BLOWS_UP = "1e9"  # a learning rate no recipe survives, even at an eighth


def _splits(image_folder):
    return data.split(data.load(str(image_folder)), 40, seed=0)


def _compile_blowing_up_at_full_rate(model):
    """The learning rate is absurd at the full scale and sane from half of it on."""
    scales = []

    def compile_at(scale: float) -> None:
        scales.append(scale)
        fitting.compile_model(model, 1e9 if scale == 1 else 0.01, 0.1, "sgd")

    return compile_at, scales


def test_a_diverging_run_restarts_from_the_start_at_half_the_rate_and_finishes(
        image_folder, tmp_path):
    splits = _splits(image_folder)
    model = models.build("squeezenet", (32, 32, 3), len(splits.classes), batch_norm=True)
    compile_at, scales = _compile_blowing_up_at_full_rate(model)
    config = {"epochs": 2, "batch_size": 32, "seed": 0}
    fit = fitting.fit_epochs(model, splits, tmp_path, "train", config, InputContract(),
                             compile_at)
    assert scales == [1.0, 0.5]
    assert [r["learning_rate_scale"] for r in fit.recoveries] == [0.5]
    assert fit.recoveries[0]["restarted_after_epoch"] == 0 and fit.recoveries[0]["epoch"] == 1
    assert len(fit.history["loss"]) == 2 and all(math.isfinite(v) for v in fit.history["loss"])
    assert fit.epochs_run == 2


def test_divergence_limit_catches_a_fine_tune_falling_to_chance():
    assert fitting.divergence_limit(0.6, 10) < math.log(10)  # 2.303: a collapsed network
    assert fitting.divergence_limit(2.5, 10) == 5.0  # from scratch: twice the start


def test_prune_that_keeps_diverging_names_prunes_and_builds_option(trained_folder, copy_of,
                                                                    monkeypatch):
    monkeypatch.setattr(fitting, "MAX_RESTARTS", 1)  # one restart shows the path; 3 cost 15 s
    folder = copy_of(trained_folder)
    result = CliRunner().invoke(app, ["prune", "--epochs", "1", "--learning-rate", BLOWS_UP,
                                      "--artifacts", str(folder)])
    assert result.exit_code == 2, result.output
    assert "--prune-learning-rate on build" in result.output
    assert "[prune] learning_rate" in result.output
    assert not (folder / "pruned.h5").exists()


def test_qat_that_keeps_diverging_names_the_qat_learning_rate(trained_folder, copy_of,
                                                              monkeypatch):
    monkeypatch.setattr(fitting, "MAX_RESTARTS", 1)
    folder = copy_of(trained_folder)
    result = CliRunner().invoke(app, ["quantize", "--qat", "--qat-learning-rate", BLOWS_UP,
                                      "--artifacts", str(folder)])
    assert result.exit_code == 2, result.output
    assert "qat diverged" in result.output
    assert "--qat-learning-rate on quantize and build" in result.output
    assert not (folder / "squeezenet_int8.tflite").exists()


def test_build_hands_its_fine_tuning_rates_to_prune_and_qat(image_folder, built):
    """Said by a dry run: build's rate flags change prune's and quantize's settings."""
    build = [*BUILD, "--data", str(image_folder), "--artifacts", str(built), "--dry-run"]
    result = CliRunner().invoke(app, [*build, "--prune-learning-rate", "0.02"])
    assert result.exit_code == 0, result.output
    assert "> prune: would run (changed: learning_rate 0.01 -> 0.02)" in result.output
    result = CliRunner().invoke(app, [*build, "--qat", "--qat-learning-rate", "0.0002"])
    assert result.exit_code == 0, result.output
    assert "> quantize: would run (changed: qat false -> true, qat_learning_rate 0.0001 -> " \
           "0.0002)" in result.output


@pytest.mark.slow
def test_a_dataset_smaller_than_one_batch_trains_and_prunes_at_the_default_batch(tmp_path):
    folder = synthetic.write_image_folder(tmp_path / "few", train_per_class=6,
                                          test_per_class=4)
    artifacts = tmp_path / "artifacts"
    for command in (["train", "--data", str(folder), "--epochs", "4"],
                    ["prune", "--epochs", "2"]):
        result = CliRunner().invoke(app, [*command, "--artifacts", str(artifacts)])
        assert result.exit_code == 0, result.output
    train = json.loads((artifacts / "train.json").read_text())
    assert train["data"]["train_images"] < 128 and train["recoveries"] == []
    assert json.loads((artifacts / "prune.json").read_text())["recoveries"] == []


@pytest.mark.parametrize("stage", sorted(fitting.LEARNING_RATE_OPTION))
def test_every_learning_rate_option_of_the_advice_exists(stage):
    """Each option the advice names is one the command really takes."""
    advice = fitting.LEARNING_RATE_OPTION[stage]
    for part in advice.split(", "):
        if part.startswith("--"):
            option, _, commands = part.partition(" on ")
            for command in commands.replace(" and ", " ").split():
                result = CliRunner().invoke(app, [command, "--help"])
                assert option in result.output, (option, command)
        else:
            section, key = part.split("] ")[0].strip("["), part.split("] ")[1].split()[0]
            assert key in SECTIONS[section].__dataclass_fields__, (section, key)


def test_a_bug_exits_70_with_its_traceback_never_1(trained_folder, copy_of, monkeypatch):
    """Exit 1 is a missed gate and nothing else: an unexpected exception is a bug."""
    from edgefire.stages import prune

    def broken(*args, **kwargs):
        return 1 / 0

    monkeypatch.setattr(prune, "prune_model", broken)
    result = CliRunner().invoke(app, ["prune", "--artifacts", str(copy_of(trained_folder))])
    assert result.exit_code == 70, result.output
    assert "ZeroDivisionError" in result.output and "internal error" in result.output


def test_a_converter_failing_on_valid_input_exits_3_naming_it(built, copy_of, monkeypatch):
    import tf2onnx

    def fails(*args, **kwargs):
        raise ValueError("Unsupported ops: Foo")

    monkeypatch.setattr(tf2onnx.convert, "from_keras", fails)
    result = CliRunner().invoke(app, ["export", "--artifacts", str(copy_of(built))])
    assert result.exit_code == 3, result.output
    assert "edgefire: error: tf2onnx (opset 13) failed: Unsupported ops: Foo" in result.output


def _made_invalid(*args, **kwargs):
    """What a quantizer's broken file meets: onnx.checker's real verdict on a Mul of a [2]
    and a [3] tensor (the shapes cannot broadcast)."""
    import onnx
    from onnx import TensorProto, helper

    from edgefire.stages import export

    graph = helper.make_graph(
        [helper.make_node("Mul", ["a", "b"], ["c"])], "broken",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])])
    export.checked(helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)]),
                   "onnxruntime's static quantization")


def test_an_invalid_int8_onnx_candidate_is_left_out_with_why(built, copy_of, monkeypatch):
    from edgefire.stages import export

    monkeypatch.setattr(export, "ort_int8_onnx", _made_invalid)
    folder = copy_of(built)
    result = CliRunner().invoke(app, ["export", "--artifacts", str(folder)])
    assert result.exit_code == 0, result.output
    chosen = json.loads((folder / "export.json").read_text())["int8_onnx"]
    assert chosen["chosen"] == "tf2onnx-from-int8-tflite"
    assert chosen["candidates"]["onnxruntime-static-u8s8"]["error"].startswith(
        "onnxruntime's static quantization made an invalid int8 ONNX: ")
    monkeypatch.setattr(export, "tflite_int8_onnx", _made_invalid)
    result = CliRunner().invoke(app, ["export", "--artifacts", str(folder)])
    assert result.exit_code == 3, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("edgefire:")]
    assert len(errors) == 1 and errors[0].startswith(
        "edgefire: error: no int8 ONNX could be made: tf2onnx-from-int8-tflite: ")
