"""A `.tflite` file in LiteRT: its interpreter, and how uint8 pixels become its input and its
output becomes scores (the model's own scale and zero point). Shared by the LiteRT runner and
TFLite Micro's (`micro.py`), which read the same file's tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefire.contract import InputContract
from edgefire.errors import EdgefireError, first_line


def quantize_input(pixels: np.ndarray, contract: InputContract, dtype, scale: float,
                   zero_point: int) -> np.ndarray:
    """Model input for uint8 pixels: normalized, quantized with the model's own parameters."""
    x = contract.normalize(pixels)
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


@dataclass(frozen=True)
class TFLiteIO:
    """A `.tflite`'s input and output tensors: how pixels become its input, and its output
    scores (dequantized when integer)."""

    dtype: type
    input_size: int
    input_quantization: tuple[float, int]
    output_quantization: tuple[float, int]

    def prepare(self, pixels: np.ndarray, contract: InputContract) -> np.ndarray:
        return quantize_input(pixels, contract, self.dtype, *self.input_quantization)

    def dequantize(self, scores: np.ndarray) -> np.ndarray:
        scale, zero_point = self.output_quantization
        if np.issubdtype(scores.dtype, np.integer) and scale:
            return (scores.astype(np.float32) - zero_point) * scale
        return scores.astype(np.float32)


def io_of(interpreter) -> TFLiteIO:
    tensor, output = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    return TFLiteIO(tensor["dtype"], int(tensor["shape"][1]), tuple(tensor["quantization"]),
                    tuple(output["quantization"]))


def interpreter(path: Path, threads: int | None = None):
    """The LiteRT interpreter of a file, its tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    from edgefire.tfenv import quiet

    try:
        with quiet():
            made = Interpreter(model_path=str(path), num_threads=threads)
            made.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise EdgefireError(f"{path}: not a valid TFLite model ({first_line(exc)})") from None
    return made


def tflite_io(path: Path) -> TFLiteIO:
    return io_of(interpreter(path))
