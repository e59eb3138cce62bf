"""Accuracy-aware int8: a model that int8 breaks is repaired by keeping layers in float."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from edgefire import artifacts, layout, models, runtimes
from edgefire.cli import app


def break_int8(folder) -> None:
    """The same float function, but int8 ruins it: one fire5 channel is made dead (always 0
    after ReLU) and conv10 gets weights of 1000 on it. They multiply zero in float, but
    per-channel int8 scales of conv10 then round every other weight to zero."""
    model = models.load_model(folder / layout.TRAINED)
    expand = model.get_layer("fire5/expand1x1")
    kernel, bias = expand.get_weights()
    kernel[..., 0], bias[0] = 0.0, -1.0
    expand.set_weights([kernel, bias])
    conv10 = model.get_layer("conv10")
    kernel, bias = conv10.get_weights()
    kernel[0, 0, 0, :] = 1000.0
    conv10.set_weights([kernel, bias])
    models.save_model(model, folder / layout.TRAINED)
    train = json.loads((folder / layout.record("train")).read_text())
    outputs = [folder / n for n in (layout.TRAINED, layout.HISTORY, layout.TRAINING_CURVES,
                                    layout.record("train"))]
    artifacts.record_stage(folder, "train", outputs, [], train["config"])


def test_the_fallback_keeps_the_worst_layer_in_float_until_the_drop_is_within_budget(
        trained_folder, copy_of):
    folder = copy_of(trained_folder)
    break_int8(folder)
    result = CliRunner().invoke(app, ["quantize", "--artifacts", str(folder)])
    assert result.exit_code == 0, result.output
    record = json.loads((folder / "quantize.json").read_text())["fallback"]
    attempts = record["attempts"]
    assert attempts[0]["attempt"] == "post-training int8" and attempts[0]["val_drop"] > 1.0
    assert attempts[1]["attempt"] == "quantization-aware training"
    assert record["within_budget"] and attempts[-1]["val_drop"] <= 1.0
    assert "conv10" in record["float_layers"] and not record["full_integer"]
    assert record["chosen"] == attempts[-1]["attempt"]
    assert "no longer full-integer" in result.output
    tflite = runtimes.open_model(folder / "squeezenet_int8.tflite")
    ops = {op["op_name"] for op in tflite.interpreter._get_ops_details()}
    assert "DEQUANTIZE" in ops  # float layers inside
    assert tflite.io.dtype.__name__ == "uint8"  # still raw camera pixels in


def test_without_the_fallback_the_broken_int8_file_is_kept_and_says_so(trained_folder,
                                                                        copy_of):
    folder = copy_of(trained_folder)
    break_int8(folder)
    result = CliRunner().invoke(app, ["quantize", "--no-fallback", "--artifacts", str(folder)])
    assert result.exit_code == 0, result.output
    record = json.loads((folder / "quantize.json").read_text())["fallback"]
    assert len(record["attempts"]) == 1 and not record["within_budget"]
    assert record["full_integer"]
