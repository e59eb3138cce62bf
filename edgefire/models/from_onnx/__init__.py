"""An ONNX image classifier (`--model model.onnx`, PyTorch's way out) made into a tf_keras
model of real layers, so that every stage works on it as on a Keras file.

The file is untrusted input: it is read by `onnx` (no code runs), checked by
`onnx.checker` (full check), its external data must lie in its own folder, and operators
of other domains are refused by name before anything is built. The converted model takes
NHWC images (the layout turns once, at its input) and is proved equal to the file in
onnxruntime (`agreement`) before the build uses it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefire.errors import EdgefireError
from edgefire.models.from_onnx import ops
from edgefire.models.from_onnx.graph import Graph, Value, attributes
from edgefire.tfenv import keras

MAX_BYTES = 2_000_000_000  # protobuf's own limit; a larger file needs external data
MAX_SIDE = 4096  # an input side past this is not an image classifier's
SAME_TOP1 = 0.995  # agreement with onnxruntime below this stops the build


def read(path: Path):
    """The ONNX model in `path`, checked before anything is built from it."""
    import onnx

    if path.stat().st_size > MAX_BYTES:
        raise EdgefireError(f"{path}: {path.stat().st_size:,} bytes, past what one ONNX file "
                            "holds")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and others
        raise EdgefireError(f"{path}: not a readable ONNX model ({type(exc).__name__})"
                            ) from None
    _check_external_data(model, path)
    for node in model.graph.node:  # before the checker, which knows no schema of theirs
        if node.domain not in ("", "ai.onnx"):
            raise EdgefireError(f"{path}: node {node.name!r} is operator {node.op_type!r} of "
                                f"domain {node.domain!r}; edgefire reads standard ONNX only")
    from onnx.external_data_helper import load_external_data_for_model

    load_external_data_for_model(model, str(path.parent))
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # ValidationError, InferenceError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgefireError(f"{path}: not a valid ONNX model ({first[:200]})") from None
    return model


def _check_external_data(model, path: Path) -> None:
    """External weights only in files inside the model's own folder."""
    from onnx.external_data_helper import uses_external_data

    for tensor in model.graph.initializer:
        if not uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (path.parent / location).resolve()
        if Path(location).is_absolute() or ".." in Path(location).parts or \
                path.parent.resolve() not in target.parents:
            raise EdgefireError(f"{path}: tensor {tensor.name!r} keeps its data at "
                                f"{location!r}, outside the model's folder; not read")


def input_shape(model, path: Path) -> tuple:
    """(channels, height, width) of the one image input; None for a free size."""
    inputs = [i for i in model.graph.input
              if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise EdgefireError(f"{path}: the model has {len(inputs)} inputs and "
                            f"{len(model.graph.output)} outputs; an image classifier has one "
                            "each")
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise EdgefireError(f"{path}: input shape {dims} is not an image batch (N, C, H, W)")
    channels, height, width = dims[1:]
    if channels != 3:
        raise EdgefireError(f"{path}: input has {channels} channels; edgefire builds RGB "
                            "models (N, 3, H, W)")
    if any(side is not None and not 1 <= side <= MAX_SIDE for side in (height, width)):
        raise EdgefireError(f"{path}: input {height}x{width} is not an image size edgefire "
                            f"takes (up to {MAX_SIDE})")
    return channels, height, width


def walk(model, path: Path, size: int) -> tuple[object, Graph]:
    """The Keras input of size x size NHWC images and the graph of values it makes, each
    node made by its function in `ops.OPS`; an operator without one is one line."""
    graph = Graph(model, str(path))
    source = next(i for i in model.graph.input if i.name not in graph.values)
    inputs = keras().layers.Input((size, size, 3), name="image")
    graph.values[source.name] = Value(inputs)
    for node in model.graph.node:
        function = ops.OPS.get(node.op_type)
        if function is None:
            raise graph.error(node, f"is an operator edgefire cannot convert yet (supported: "
                                    f"{', '.join(sorted(ops.OPS))})")
        outputs = function(graph, node, attributes(node))
        for name, value in zip(node.output, outputs, strict=False):
            graph.values[name] = value
    return inputs, graph


def convert(model, path: Path, size: int):
    """The tf_keras model of `model` for size x size NHWC images, softmax scores out; and
    whether a softmax was appended (the file gives logits)."""
    inputs, graph = walk(model, path, size)
    out = graph.values[model.graph.output[0].name]
    if out.is_const or out.rank != 2:
        raise EdgefireError(f"{path}: the output is not one score per class (N, classes)")
    ends_in_softmax = model.graph.node[-1].op_type == "Softmax"
    scores = out.tensor if ends_in_softmax else keras().layers.Softmax(name="scores")(out.tensor)
    return keras().Model(inputs, scores, name=path.stem), not ends_in_softmax


def onnxruntime_scores(path: Path, images: np.ndarray) -> np.ndarray:
    """The file's own outputs in onnxruntime for NHWC float images (turned to NCHW)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)
    return np.concatenate([session.run(None, {name: nchw[i:i + 64]})[0]
                           for i in range(0, len(nchw), 64)])


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def compare(path: Path, converted, images: np.ndarray, logits: bool) -> dict:
    """Top-1 agreement and largest score difference of the converted model and the file in
    onnxruntime on `images` (model inputs, NHWC)."""
    theirs = onnxruntime_scores(path, images)
    theirs = softmax(theirs) if logits else theirs
    ours = converted.predict(images, batch_size=64, verbose=0)
    return {"images": int(len(images)),
            "agreement": float(np.mean(ours.argmax(1) == theirs.argmax(1))),
            "max_score_difference": float(np.max(np.abs(ours - theirs)))}


def describe(model) -> dict:
    """What train.json records of the file beside its sha256."""
    return {"format": "onnx", "opset": max((o.version for o in model.opset_import
                                            if o.domain in ("", "ai.onnx")), default=None),
            "producer": f"{model.producer_name} {model.producer_version}".strip()}


def first_difference(model, path: Path, size: int, images: np.ndarray,
                     tolerance: float = 1e-3) -> str | None:
    """The first node, in graph order, whose output in the converted layers is not the one
    onnxruntime computes on `images` (model inputs, NHWC): where a conversion went wrong."""
    import onnxruntime
    from onnx import helper

    inputs, graph = walk(model, path, size)
    probes = [(node, node.output[0]) for node in model.graph.node
              if node.output and not graph.values[node.output[0]].is_const]
    ours = keras().Model(inputs, [graph.values[name].tensor for _, name in probes]).predict(
        images, verbose=0)
    extended = type(model)()
    extended.CopyFrom(model)
    extended.graph.output.extend(helper.make_empty_tensor_value_info(name)
                                 for _, name in probes)
    session = onnxruntime.InferenceSession(extended.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)
    theirs = session.run([name for _, name in probes],
                         {session.get_inputs()[0].name: nchw})
    for (node, _), mine, own in zip(probes, ours, theirs, strict=True):
        mine = mine.transpose(0, 3, 1, 2) if mine.ndim == 4 else mine
        scale = max(1.0, float(np.max(np.abs(own)))) if own.size else 1.0
        if mine.shape != own.shape or np.max(np.abs(mine - own)) > tolerance * scale:
            return f"{node.name or node.output[0]!r} ({node.op_type})"
    return None
