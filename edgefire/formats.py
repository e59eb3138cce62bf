"""The model file formats edgefire writes and reads, one row each: the suffixes that name it,
the runtime that measures it on the whole test split (its native one, in `runtimes.RUNTIMES`),
and how its input and output tensor names are read from its bytes (for the manifest).

A new format is a row here, a runner in `runtimes.py` and, to be written by a build, a row of
`export.DEPLOYABLES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class Format:
    name: str
    suffixes: tuple[str, ...]
    native: str  # the runtime that measures it on the whole test split
    io_names: Callable[[bytes], dict]


FORMATS = {f.name: f for f in (
    Format("keras", (".h5", ".keras"), "tf_keras", _no_io),
    Format("tflite", (".tflite",), "litert", _tflite_io),
    Format("onnx", (".onnx",), "onnxruntime", _onnx_io),
)}
SUFFIXES = {suffix: f for f in FORMATS.values() for suffix in f.suffixes}


def of(path: Path) -> Format:
    """The format of a model file, by its suffix; one line for any other file."""
    try:
        return SUFFIXES[path.suffix]
    except KeyError:
        raise EdgefireError(f"{path}: unknown model format (expected "
                            f"{', '.join(SUFFIXES)})") from None
