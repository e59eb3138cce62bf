"""Load an artifact in its own runtime and run it on uint8 images.

Keras files run in tf_keras, `.tflite` in the LiteRT interpreter (ai-edge-litert) and `.onnx`
in onnxruntime. Every runner takes uint8 NHWC pixels at the model's size exactly as a camera
gives them and turns them into the model's input itself: the input contract's normalization
for float inputs, and for quantized inputs the model's own scale and zero point applied to
that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefire.contract import InputContract
from edgefire.errors import EdgefireError

FORMATS = {".h5": "keras", ".keras": "keras", ".tflite": "tflite", ".onnx": "onnx"}


def format_of(path: Path) -> str:
    try:
        return FORMATS[path.suffix]
    except KeyError:
        raise EdgefireError(f"{path}: unknown model format (expected "
                            f"{', '.join(FORMATS)})") from None


def quantize_input(pixels: np.ndarray, contract: InputContract, dtype, scale: float,
                   zero_point: int) -> np.ndarray:
    """Model input for uint8 pixels: normalized, quantized with the model's own parameters."""
    x = contract.normalize(pixels)
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


class TFLiteRunner:
    """The LiteRT interpreter, resized to run a whole batch per invoke."""

    def __init__(self, path: Path, threads: int | None, contract: InputContract):
        from ai_edge_litert.interpreter import Interpreter

        from edgefire.tfenv import quiet

        self.path, self.contract = path, contract
        try:
            with quiet():
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise EdgefireError(f"{path}: not a valid TFLite model ({_first_line(exc)})") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = 1
        self.input_size = int(self.input["shape"][1])

    def _resize(self, batch: int) -> None:
        if batch != self.batch:
            shape = [batch, *self.input["shape"][1:]]
            self.interpreter.resize_tensor_input(self.input["index"], shape)
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            self.batch = batch

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Raw output scores (dequantized to float) for a batch of uint8 images."""
        self._resize(len(pixels))
        scale, zero_point = self.input["quantization"]
        x = quantize_input(pixels, self.contract, self.input["dtype"], scale, zero_point)
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        out_scale, out_zero = self.output["quantization"]
        if np.issubdtype(y.dtype, np.integer) and out_scale:
            return (y.astype(np.float32) - out_zero) * out_scale
        return y.astype(np.float32)


class OnnxRunner:
    """An onnxruntime CPU session."""

    def __init__(self, path: Path, threads: int | None, contract: InputContract):
        import onnxruntime as ort

        self.contract = contract
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise EdgefireError(f"{path}: not a valid ONNX model ({_first_line(exc)})") from None
        self.input = self.session.get_inputs()[0]
        self.input_size = int(self.input.shape[1])

    def run(self, pixels: np.ndarray) -> np.ndarray:
        x = pixels if self.input.type == "tensor(uint8)" else self.contract.normalize(pixels)
        return self.session.run(None, {self.input.name: x})[0].astype(np.float32)


class KerasRunner:
    def __init__(self, path: Path, threads: int | None, contract: InputContract):
        from edgefire.models import load_model

        self.model, self.contract = load_model(path), contract
        self.input_size = int(self.model.input_shape[1])

    def run(self, pixels: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(self.contract.normalize(pixels), training=False))


RUNNERS = {"keras": KerasRunner, "tflite": TFLiteRunner, "onnx": OnnxRunner}


def open_model(path: Path, threads: int | None = None,
               contract: InputContract | None = None):
    """A runner for the artifact at `path`, chosen by its format; pixels are prepared by
    `contract` (the reference's 32x32 pixel / 255 when not given)."""
    if not path.exists():
        raise EdgefireError(f"{path}: model file not found")
    if path.stat().st_size == 0:
        raise EdgefireError(f"{path}: model file is empty")
    return RUNNERS[format_of(path)](path, threads, contract or InputContract())


def predict(runner, pixels: np.ndarray, batch: int = 500) -> np.ndarray:
    """Predicted class indices for all images, run `batch` at a time."""
    labels = []
    for start in range(0, len(pixels), batch):
        labels.append(np.argmax(runner.run(pixels[start:start + batch]), axis=1))
    return np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
