"""The firmware pack: an integer `.tflite` as C++ source for a TFLite Micro project (`mcu/`).

- `model_data.h` / `.cc`: the file's exact bytes as `g_model` and `g_model_len` (the names
  TFLite Micro's examples use), its sha256 in a comment;
- `model_settings.h`: input and output shapes, types and quantization, the labels, how pixels
  become the input, and `kTensorArenaSize`: the arena TFLite Micro used for this very file,
  measured by running it here, plus `ARENA_MARGIN`;
- `op_resolver.h`: a `MicroMutableOpResolver` registering exactly the file's operators;
- `golden.h` / `.cc`: a few test images and the raw output tensors TFLite Micro gave them;
- `main.cc`, `CMakeLists.txt`, `README.md`: a self-test that runs the golden images on target.

Nothing here is guessed: the arena and the golden outputs come from the TFLite Micro run.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefire import layout
from edgefire.contract import InputContract
from edgefire.version import VERSION

FOLDER = layout.MCU
GOLDEN_IMAGES = 4
ARENA_MARGIN = 0.10  # measured with reference kernels on a 64-bit host; see README_TEXT
C_TYPES = {np.dtype(np.int8): "int8_t", np.dtype(np.uint8): "uint8_t"}
# TFLite Micro's MicroMutableOpResolver methods whose names do not follow the op's
# (`CONV_2D` -> `AddConv2D`)
RESOLVER_NAMES = {"PADV2": "PadV2", "CUMSUM": "CumSum",
                  "UNIDIRECTIONAL_SEQUENCE_LSTM": "UnidirectionalSequenceLSTM"}
TEMPLATES = Path(__file__).parent / "mcu_templates"


@dataclass(frozen=True)
class Tensor:
    """An integer input or output tensor: shape without the batch, type, quantization."""

    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int

    @property
    def c_type(self) -> str:
        return C_TYPES[self.dtype]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class Measured:
    """What running the file in TFLite Micro gave: the golden inputs, their raw outputs and
    labels, and the arena bytes it used."""

    inputs: np.ndarray
    outputs: np.ndarray
    labels: np.ndarray
    arena_bytes: int


def arena_size(measured: int) -> int:
    """`kTensorArenaSize`: the measured arena plus at most the margin, a multiple of 16 bytes
    (never below the measurement)."""
    return max(math.ceil(measured / 16), math.floor(measured * (1 + ARENA_MARGIN) / 16)) * 16


def resolver_method(op: str) -> str:
    """The `MicroMutableOpResolver` method that registers a builtin operator."""
    words = [w if w[0].isdigit() else w.capitalize() for w in op.split("_")]  # 2D stays 2D
    return "Add" + RESOLVER_NAMES.get(op, "".join(words))


def c_string(text: str) -> str:
    """A C string literal of UTF-8 text: printable ASCII as is, every other byte in octal
    (three digits, so that a following digit is never read as part of the escape)."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        out.append(char if 0x20 <= byte < 0x7F and char not in '"\\?' else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def c_numbers(values, per_line: int = 12, indent: str = "    ", form: str = "d") -> str:
    """Integers as the body of a C array initializer, `per_line` to a line (`form` "#04x":
    bytes in hex)."""
    items = [format(int(v), form) for v in values]
    rows = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return ",\n".join(indent + row for row in rows)


def c_float(value: float) -> str:
    return f"{float(value)!r}f"


def model_data(content: bytes, name: str) -> dict[str, str]:
    digest = hashlib.sha256(content).hexdigest()
    about = f"// {name}: {len(content)} bytes, sha256 {digest}\n"
    return {
        "model_data.h": _fill("model_data.h", about=about),
        "model_data.cc": _fill("model_data.cc", about=about, bytes=c_numbers(content, form="#04x"),
                               length=str(len(content)))}


def model_settings(inputs: Tensor, outputs: Tensor, classes: list[str],
                   contract: InputContract, measured_arena: int) -> str:
    height, width, channels = inputs.shape
    return _fill(
        "model_settings.h", width=str(width), height=str(height), channels=str(channels),
        input_type=inputs.c_type, input_scale=c_float(inputs.scale),
        input_zero_point=str(inputs.zero_point), output_type=outputs.c_type,
        output_scale=c_float(outputs.scale), output_zero_point=str(outputs.zero_point),
        classes=str(len(classes)),
        labels=",\n".join(f"    {c_string(name)}" for name in classes),
        mean=", ".join(c_float(m) for m in contract.mean),
        std=", ".join(c_float(s) for s in contract.std),
        arena=str(arena_size(measured_arena)), measured_arena=str(measured_arena),
        margin=f"{ARENA_MARGIN:.0%}")


def op_resolver(ops: list[str]) -> str:
    calls = "\n".join(f"  if (resolver.{resolver_method(op)}() != kTfLiteOk) "
                      "return kTfLiteError;" for op in ops)
    return _fill("op_resolver.h", count=str(len(ops)), ops=", ".join(ops), calls=calls)


def golden(measured: Measured, inputs: Tensor, outputs: Tensor) -> dict[str, str]:
    def table(rows: np.ndarray) -> str:
        return ",\n".join("    {\n" + c_numbers(row.reshape(-1), 16, "        ") + "\n    }"
                          for row in rows)

    count = str(len(measured.inputs))
    return {"golden.h": _fill("golden.h", count=count, input_type=inputs.c_type,
                              output_type=outputs.c_type),
            "golden.cc": _fill("golden.cc", count=count, input_type=inputs.c_type,
                               output_type=outputs.c_type, inputs=table(measured.inputs),
                               outputs=table(measured.outputs),
                               labels=c_numbers(measured.labels, 16))}


def pack(content: bytes, name: str, ops: list[str], inputs: Tensor, outputs: Tensor,
         classes: list[str], contract: InputContract, measured: Measured) -> dict[str, bytes]:
    """Every file of `mcu/`, by name."""
    files = {**model_data(content, name),
             "model_settings.h": model_settings(inputs, outputs, classes, contract,
                                                measured.arena_bytes),
             "op_resolver.h": op_resolver(ops),
             **golden(measured, inputs, outputs),
             "main.cc": _fill("main.cc"),
             "CMakeLists.txt": _fill("CMakeLists.txt"),
             "README.md": _fill("README.md", name=name, arena=str(arena_size(
                 measured.arena_bytes)), measured_arena=str(measured.arena_bytes),
                 margin=f"{ARENA_MARGIN:.0%}", golden=str(len(measured.inputs)))}
    return {file: text.encode("utf-8") for file, text in files.items()}


def tflite_tensors(interpreter) -> tuple[Tensor, Tensor] | None:
    """A `.tflite`'s input and output tensors; None when either is not int8 or uint8."""
    tensors = []
    for details in (interpreter.get_input_details()[0], interpreter.get_output_details()[0]):
        if np.dtype(details["dtype"]) not in C_TYPES:
            return None
        scale, zero_point = details["quantization"]
        tensors.append(Tensor(tuple(int(d) for d in details["shape"][1:]),
                              np.dtype(details["dtype"]), float(scale), int(zero_point)))
    return tensors[0], tensors[1]


def measure(path: Path, inputs: np.ndarray, labels: np.ndarray) -> Measured:
    """The golden input tensors run through TFLite Micro: their raw outputs, and the arena
    it used."""
    from edgefire.runtimes import micro

    outputs, arena, _ = micro.run_tensors(path, inputs)
    return Measured(inputs, outputs, np.asarray(labels), arena)


def golden_indices(labels: np.ndarray) -> np.ndarray:
    """The golden images: the first test image of each class, the first `GOLDEN_IMAGES` of
    those (a self-test that sees several classes)."""
    firsts = sorted(int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels))
    return np.array(firsts[:GOLDEN_IMAGES], dtype=int)


def from_tflite(path: Path, classes: list[str], contract: InputContract,
                pixels: np.ndarray, labels: np.ndarray) -> tuple[dict[str, bytes], dict] | None:
    """The pack's files for an integer `.tflite` and what export records of it, or None when
    the file takes or gives floats (TFLite Micro's int8 kernels are what it is for)."""
    from edgefire import tflite_file
    from edgefire.runtimes import litert

    interpreter = litert.interpreter(path)
    tensors = tflite_tensors(interpreter)
    if tensors is None:
        return None
    inputs, outputs = tensors
    content = path.read_bytes()
    ops = tflite_file.operators(content)
    chosen = golden_indices(labels)
    measured = measure(path, litert.io_of(interpreter).prepare(pixels[chosen], contract),
                       labels[chosen])
    files = pack(content, path.name, ops, inputs, outputs, classes, contract, measured)
    return files, {"model": path.name, "operators": ops,
                   "float_operators": tflite_file.operators(content, float_only=True),
                   "arena_measured_bytes": measured.arena_bytes,
                   "arena_bytes": arena_size(measured.arena_bytes),
                   "arena_margin": ARENA_MARGIN, "golden_images": len(measured.inputs)}


def _fill(template: str, **values: str) -> str:
    """A template of `mcu_templates/` with its `@name@` fields filled (C++ braces stay as
    they are, which `str.format` would not allow)."""
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    for key, value in {"version": VERSION, **values}.items():
        text = text.replace(f"@{key}@", value)
    return text
