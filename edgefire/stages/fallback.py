"""Accuracy-aware int8: when the int8 file loses more than `--max-drop` points of top-1 against
the float model on the *validation* split, quantize tries again, cheapest repair first:
quantization-aware training, then the layers with the largest quantization error kept in
float, one more at a time, until the drop is within budget.

Every attempt is measured in LiteRT on the validation split and recorded. A file with float
layers is no longer full-integer: its input and output stay integer (raw pixels in, scores
out), but it carries QUANTIZE/DEQUANTIZE ops around its float layers, which integer-only
accelerators (NPUs, some DSPs) will not run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from edgefire import runtimes
from edgefire.contract import InputContract
from edgefire.errors import ToolFailed

Retry = tuple[str, Callable[[], tuple[bytes, list[str]]]]  # what it tries, how: bytes, floats


def val_accuracy(tflite: bytes, x_val: np.ndarray, y_val: np.ndarray,
                 contract: InputContract) -> float:
    """Top-1 of TFLite bytes in LiteRT on the validation images."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "attempt.tflite"
        path.write_bytes(tflite)
        predicted = runtimes.predict(runtimes.open_model(path, contract=contract), x_val)
    return float(np.mean(predicted == y_val))


def within_budget(first: bytes, float_accuracy: float, max_drop: float,
                  measure: Callable[[bytes], float], retries: Iterable[Retry]
                  ) -> tuple[bytes, dict]:
    """The first attempt whose validation drop is within `max_drop` points, else the one that
    dropped least, with the record of every attempt."""
    attempts, files = [], []

    def attempt(name: str, tflite: bytes, float_layers: list[str]) -> bool:
        accuracy = measure(tflite)
        drop = round((float_accuracy - accuracy) * 100, 2)
        attempts.append({"attempt": name, "val_accuracy": accuracy, "val_drop": drop,
                         "bytes": len(tflite), "float_layers": float_layers})
        files.append(tflite)
        return drop <= max_drop

    done, skipped = attempt("post-training int8", first, []), []
    for name, make in retries:
        if done:
            break
        try:
            tflite, float_layers = make()
        except ToolFailed as exc:  # e.g. tfmot cannot quantization-aware train this model
            skipped.append({"attempt": name, "why": str(exc)})
            continue
        done = attempt(name, tflite, float_layers)
    best = len(attempts) - 1 if done else int(np.argmin([a["val_drop"] for a in attempts]))
    chosen = attempts[best]
    return files[best], {
        "max_drop": max_drop, "float_val_accuracy": float_accuracy, "attempts": attempts,
        "skipped": skipped,
        "chosen": chosen["attempt"], "within_budget": chosen["val_drop"] <= max_drop,
        "float_layers": chosen["float_layers"], "full_integer": not chosen["float_layers"]}


def keep_in_float(calibrated: bytes, nodes: list[str], io: str) -> bytes:
    """The calibrated model quantized to int8 except `nodes` (tensor names), with integer
    input and output of type `io`: TensorFlow Lite's selective quantization (the call its
    QuantizationDebugger makes), then the converter's own pass that turns float input and
    output into integer ones."""
    from tensorflow.lite.python import convert, util

    from edgefire.tfenv import quiet, tensorflow

    tf = tensorflow()
    with quiet():
        quantized = convert.mlir_quantize(calibrated, denylisted_nodes=nodes)  # float I/O
        io_type = tf.uint8 if io == "uint8" else tf.int8
        return util.modify_model_io_type(quantized, io_type, io_type)


def calibrated(converter) -> bytes:
    """The float model with the calibration statistics, before quantization."""
    from edgefire.tfenv import quiet

    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True  # the debugger's own way to get it
    with quiet():
        return converter.convert()
