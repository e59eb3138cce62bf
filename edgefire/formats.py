"""The model file formats edgefire writes and reads, one row each: the suffixes that name it,
the runtimes that run it (in `runtimes.RUNTIMES`; the first, its native one, measures it on
the whole test split), how its input and output tensor names are read from its bytes (for
the manifest) and how the zeros of its convolution kernels are counted (for the report).

A new format is a row here, a runner in `runtimes` and, to be written by a build, a row of
`export.DEPLOYABLES` (the precision and the function that makes it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefire.errors import EdgefireError


def _onnx_io(content: bytes) -> dict:
    import onnx

    graph = onnx.load_from_string(content).graph
    return {"input_names": [v.name for v in graph.input],
            "output_names": [v.name for v in graph.output]}


def _tflite_io(content: bytes) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    from edgefire.tfenv import quiet

    with quiet():
        interpreter = Interpreter(model_content=content)
    return {"input_names": [d["name"] for d in interpreter.get_input_details()],
            "output_names": [d["name"] for d in interpreter.get_output_details()]}


def _no_io(content: bytes) -> dict:
    raise EdgefireError("a Keras file is not a deployable: it has no manifest tensor names")


def _zeros(kernels) -> tuple[int, int]:
    kernels = list(kernels)
    return sum(int(np.sum(k == 0)) for k in kernels), sum(int(k.size) for k in kernels)


def _keras_kernel_zeros(path: Path) -> tuple[int, int]:
    """From the HDF5 file's weights themselves (loading the model could run its code)."""
    import h5py

    kernels = []
    with h5py.File(path, "r") as file:
        weights = file.get("model_weights", file)
        weights.visititems(lambda name, item: kernels.append(item[()])
                           if isinstance(item, h5py.Dataset) and item.ndim == 4 else None)
    return _zeros(kernels)


def _onnx_kernel_zeros(path: Path) -> tuple[int, int]:
    import onnx
    from onnx import numpy_helper

    return _zeros(numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer
                  if len(t.dims) == 4)


def _tflite_kernel_zeros(path: Path) -> tuple[int, int]:
    """Over the filters of every convolution. A sparse-encoded filter is the input of a DENSIFY
    op that stores only its kept values; the zeros it encodes are the dense size minus the
    non-zero values stored. A float16 filter is the input of a DEQUANTIZE op (its float32
    output exists only while the model runs)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgefire.tfenv import quiet

    with quiet():
        interpreter = Interpreter(model_path=str(path))
    ops = interpreter._get_ops_details()  # the one view of op inputs the interpreter offers
    made_from = {int(op["outputs"][0]): int(op["inputs"][0]) for op in ops
                 if op["op_name"] in ("DENSIFY", "DEQUANTIZE")}
    shapes = {t["index"]: t["shape"] for t in interpreter.get_tensor_details()}
    zeros = total = 0
    for op in ops:
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        index = int(op["inputs"][1])
        size = int(np.prod(shapes[index]))
        stored_index = index
        while stored_index in made_from:  # float16 and sparse: DENSIFY then DEQUANTIZE
            stored_index = made_from[stored_index]
        zeros += size - int(np.count_nonzero(interpreter.get_tensor(stored_index)))
        total += size
    return zeros, total


@dataclass(frozen=True)
class Format:
    name: str
    suffixes: tuple[str, ...]
    runtimes: tuple[str, ...]  # the runtimes that run it, its native one first
    io_names: Callable[[bytes], dict]
    kernel_zeros: Callable[[Path], tuple[int, int]]  # zeros and weights of its conv kernels


FORMATS = {f.name: f for f in (
    Format("keras", (".h5", ".keras"), ("tf_keras",), _no_io, _keras_kernel_zeros),
    Format("tflite", (".tflite",), ("litert", "openvino", "tflite-micro"), _tflite_io,
           _tflite_kernel_zeros),
    Format("onnx", (".onnx",), ("onnxruntime", "openvino"), _onnx_io, _onnx_kernel_zeros),
)}
SUFFIXES = {suffix: f for f in FORMATS.values() for suffix in f.suffixes}


def of(path: Path) -> Format:
    """The format of a model file, by its suffix; one line for any other file."""
    try:
        return SUFFIXES[path.suffix]
    except KeyError:
        raise EdgefireError(f"{path}: unknown model format (expected "
                            f"{', '.join(SUFFIXES)})") from None
