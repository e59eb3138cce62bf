"""Load an artifact in a runtime and run it on uint8 images.

Each format has its native runtime: tf_keras for Keras files, the LiteRT interpreter
(ai-edge-litert) for `.tflite`, onnxruntime for `.onnx`. The optional runtimes (extras of the
package) run the same files as their users' devices do: OpenVINO (`.tflite` and `.onnx`) and
TFLite Micro (`.tflite`, see `micro.py`). Every runner takes uint8 NHWC pixels at the model's
size exactly as a camera gives them and turns them into the model's input itself: the input
contract's normalization for float inputs, and for quantized inputs the model's own scale and
zero point applied to that.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefire import formats
from edgefire.checks import choice
from edgefire.contract import InputContract
from edgefire.errors import EdgefireError, first_line
from edgefire.runtimes import litert
from edgefire.runtimes.micro import MicroRunner


class TFLiteRunner:
    """The LiteRT interpreter, resized to run a whole batch per invoke."""

    def __init__(self, path: Path, threads: int | None, contract: InputContract):
        self.path, self.contract = path, contract
        self.interpreter = litert.interpreter(path, threads)
        self.io = litert.io_of(self.interpreter)
        self.input_size = self.io.input_size
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self.batch = 1

    def _resize(self, batch: int) -> None:
        if batch != self.batch:
            self.interpreter.resize_tensor_input(self.input_index,
                                                 [batch, *self.pixels_shape()])
            self.interpreter.allocate_tensors()
            self.batch = batch

    def pixels_shape(self) -> list[int]:
        return [int(v) for v in self.interpreter.get_input_details()[0]["shape"][1:]]

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Raw output scores (dequantized to float) for a batch of uint8 images."""
        self._resize(len(pixels))
        self.interpreter.set_tensor(self.input_index, self.io.prepare(pixels, self.contract))
        self.interpreter.invoke()
        return self.io.dequantize(self.interpreter.get_tensor(self.output_index))


def onnx_input(pixels: np.ndarray, input_type: str, contract: InputContract) -> np.ndarray:
    """An ONNX model's input: the pixels themselves for a uint8 input, shifted by -128 for an
    int8 one (the int8 TFLite's `--io int8`: zero point -128), else normalized."""
    if input_type == "tensor(uint8)":
        return pixels
    if input_type == "tensor(int8)":
        return (pixels.astype(np.int16) - 128).astype(np.int8)
    return contract.normalize(pixels)


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
            raise EdgefireError(f"{path}: not a valid ONNX model ({first_line(exc)})") from None
        self.input = self.session.get_inputs()[0]
        # edgefire's own files take NHWC; a PyTorch export takes NCHW (3 channels first)
        shape = self.input.shape
        self.channels_first = len(shape) == 4 and shape[1] == 3 and shape[3] != 3
        side = shape[2] if self.channels_first else shape[1]
        self.input_size = int(side) if isinstance(side, int) else contract.size

    def run(self, pixels: np.ndarray) -> np.ndarray:
        x = onnx_input(pixels, self.input.type, self.contract)
        if self.channels_first:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return self.session.run(None, {self.input.name: x})[0].astype(np.float32)


class OpenVinoRunner:
    """OpenVINO's CPU plugin, reading the `.tflite` or `.onnx` file itself."""

    def __init__(self, path: Path, threads: int | None, contract: InputContract):
        import openvino as ov

        self.contract = contract
        self.io = litert.tflite_io(path) if formats.of(path).name == "tflite" else None
        try:
            core = ov.Core()
            config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
            self.model = core.compile_model(core.read_model(str(path)), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types
            raise EdgefireError(f"{path}: OpenVINO cannot run it ({first_line(exc)})") from None
        port = self.model.inputs[0]
        self.input_type = f"tensor({np.dtype(port.get_element_type().to_dtype()).name})"
        self.input_size = int(port.get_partial_shape()[1].get_length())
        batch = port.get_partial_shape()[0]
        # a file traced at one image (flip averaging's) takes one image a run
        self.one_image = batch.is_static and batch.get_length() == 1

    def run(self, pixels: np.ndarray) -> np.ndarray:
        if self.one_image and len(pixels) > 1:
            return np.concatenate([self.run(pixels[i:i + 1]) for i in range(len(pixels))])
        if self.io:
            scores = self.model(self.io.prepare(pixels, self.contract))[self.model.outputs[0]]
            return self.io.dequantize(scores)
        x = onnx_input(pixels, self.input_type, self.contract)
        return self.model(x)[self.model.outputs[0]].astype(np.float32)


class KerasRunner:
    def __init__(self, path: Path, threads: int | None, contract: InputContract,
                 trust_code: bool | None = None):
        from edgefire.models import load_model

        self.model, self.contract = load_model(path, trust_code), contract
        self.input_size = int(self.model.input_shape[1])

    def run(self, pixels: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(self.contract.normalize(pixels), training=False))


@dataclass(frozen=True)
class Runtime:
    """A runtime edgefire can run files in (the formats it runs are `formats.FORMATS`'): its
    runner, the module that is importable when it is installed and the extra of this package
    that installs it."""

    name: str
    runner: Callable
    module: str
    extra: str | None = None  # None: a dependency of edgefire itself
    subset: bool = False  # slow enough to run on a subset of the test split (--micro-images)
    times_itself: bool = False  # its runner measures latency and arena as it runs

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(f.name for f in formats.FORMATS.values() if self.name in f.runtimes)

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def missing(self) -> str:
        """Why it did not run: the line a user reads."""
        return f"not installed (pip install 'edgefire[{self.extra}]')"


RUNTIMES = {runtime.name: runtime for runtime in (
    Runtime("tf_keras", KerasRunner, "tf_keras"),
    Runtime("litert", TFLiteRunner, "ai_edge_litert"),
    Runtime("onnxruntime", OnnxRunner, "onnxruntime"),
    Runtime("openvino", OpenVinoRunner, "openvino", "openvino"),
    Runtime("tflite-micro", MicroRunner, "tflite_micro", "micro", subset=True,
            times_itself=True),
)}


def runtimes_for(file_format: str) -> list[Runtime]:
    """Every runtime that takes the format, its native one first."""
    return [RUNTIMES[name] for name in formats.FORMATS[file_format].runtimes]


def open_model(path: Path, threads: int | None = None,
               contract: InputContract | None = None, runtime: str | None = None,
               trust_code: bool = False):
    """A runner for the artifact at `path` in `runtime` (by default its format's native one);
    pixels are prepared by `contract` (the reference's 32x32 pixel / 255 when not given).
    Only Keras files can hold code: `trust_code` lets their `Lambda` layers load."""
    if not path.exists():
        raise EdgefireError(f"{path}: model file not found")
    if path.stat().st_size == 0:
        raise EdgefireError(f"{path}: model file is empty")
    if runtime is not None:
        choice(runtime, tuple(RUNTIMES), "--runtime")
    file_format = formats.of(path).name
    chosen = RUNTIMES[runtime] if runtime else runtimes_for(file_format)[0]
    if file_format not in chosen.formats:
        raise EdgefireError(f"{path}: {chosen.name} does not run {file_format} files (it runs "
                            f"{', '.join(chosen.formats)})")
    if not chosen.installed():
        raise EdgefireError(f"{chosen.name}: {chosen.missing()}")
    options = {"trust_code": True} if trust_code and file_format == "keras" else {}
    return chosen.runner(path, threads, contract or InputContract(), **options)


def predict(runner, pixels: np.ndarray, batch: int = 500) -> np.ndarray:
    """Predicted class indices for all images, run `batch` at a time."""
    labels = []
    for start in range(0, len(pixels), batch):
        labels.append(np.argmax(runner.run(pixels[start:start + batch]), axis=1))
    return np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
