"""A model file is untrusted input: what it stores is judged before any library loads it.

Loading can run code stored in a file by three routes, each closed here unless the user
trusts the file (`--trust-model-code`):

- a `Lambda` layer (tf_keras: Python bytecode; Keras 3: a `__lambda__` object) is rebuilt
  by running it, and a class Keras does not know names code that is not in the file;
- a `TFOpLambda` / `SlicingOpLambda` layer names any TensorFlow function by its name
  (`"function": "io.write_file"`): only the pure math and array functions below are taken;
- a SavedModel's graph runs while it is restored (initializers, a restore function): every
  op must be a pure compute op, and the checkpoint ops may sit only in the saver's own
  functions, which nothing else calls.

Every dict of a stored config that has a `class_name` is judged by it, at any depth (nested
models, wrappers, shared objects), never by whether it carries a name.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import zipfile
from functools import cache
from pathlib import Path

from edgefire.errors import EdgefireError
from edgefire.tfenv import keras

_TRUSTED = contextvars.ContextVar("trust_model_code", default=False)


@contextlib.contextmanager
def trusting_code(trust: bool = True):
    """Within this block, model files may load their stored code (`--trust-model-code`)."""
    token = _TRUSTED.set(trust)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def code_trusted() -> bool:
    return _TRUSTED.get()


# classes whose stored config is Python code: deserializing them runs it
CODE_CLASSES = {"Lambda", "__lambda__"}
# layers that call a TensorFlow function named in the file
OP_CLASSES = {"TFOpLambda", "SlicingOpLambda"}
# classes a config names that are not layers and hold no code: models, dtype policies,
# Keras's own containers of plain values, Keras 3's activations by name (module checked)
PLAIN_CLASSES = {"Functional", "Sequential", "Model", "Policy", "DTypePolicy",
                 "FloatDTypePolicy", "__tuple__", "__ellipsis__", "__keras_tensor__",
                 "__tensor__", "__numpy__", "__bytes__", "TensorShape", "TypeSpec", "function"}
# modules a config may name for its classes (tf_keras's .keras files and Keras 3 name one)
KERAS_MODULES = ("keras", "tf_keras")

# The TensorFlow functions a TFOpLambda may name: what tf_keras stores for the operators and
# the tf.* calls of ordinary models (`x * 2`, `x[:, 1:]`, `tf.nn.relu6`, `tf.concat`...).
# Pure math on tensors: none reads or writes a file, a variable or a queue.
PURE_FUNCTIONS = frozenset({
    "__operators__.add", "__operators__.getitem", "__operators__.eq", "__operators__.ne",
    "math.add", "math.add_n", "math.subtract", "math.multiply", "math.truediv",
    "math.divide", "math.divide_no_nan", "math.floordiv", "math.negative", "math.maximum",
    "math.minimum", "math.abs", "math.sqrt", "math.rsqrt", "math.square", "math.pow",
    "math.exp", "math.log", "math.log1p", "math.sigmoid", "math.tanh", "math.erf",
    "math.reciprocal", "math.reduce_mean", "math.reduce_sum", "math.reduce_max",
    "math.reduce_min", "math.reduce_prod", "math.reduce_logsumexp", "math.l2_normalize",
    "math.greater", "math.less", "math.argmax", "math.argmin", "math.round", "math.floor",
    "math.ceil", "math.softplus", "math.scalar_mul", "linalg.matmul", "nn.relu",
    "nn.relu6", "nn.leaky_relu", "nn.elu", "nn.selu", "nn.gelu", "nn.silu", "nn.softmax",
    "nn.log_softmax", "nn.bias_add", "nn.conv2d", "nn.depthwise_conv2d", "nn.avg_pool2d",
    "nn.max_pool2d", "nn.depth_to_space", "nn.space_to_depth", "nn.l2_normalize",
    "concat", "stack", "unstack", "split", "reshape", "transpose", "expand_dims",
    "squeeze", "pad", "tile", "broadcast_to", "gather", "where", "identity",
    "stop_gradient", "cast", "clip_by_value", "shape", "ones_like", "zeros_like", "fill",
    "image.resize", "compat.v1.transpose", "compat.v1.squeeze", "compat.v1.pad",
    "compat.v1.gather",
})


@cache
def plain_classes() -> frozenset:
    """Every class name a safe config may hold: tf_keras's layers, initializers,
    regularizers and constraints (all without code), and the plain classes above."""
    tf_keras = keras()
    names = set(PLAIN_CLASSES)
    for module in (tf_keras.layers, tf_keras.initializers, tf_keras.regularizers,
                   tf_keras.constraints):
        names |= {name for name in dir(module) if isinstance(getattr(module, name), type)}
    return frozenset(names - CODE_CLASSES - OP_CLASSES)


def stored_config(path: Path):
    """The model config stored in a Keras file (an HDF5 attribute, a .keras zip's
    config.json, a SavedModel's keras_metadata.pb), parsed as JSON; None when the file holds
    none (not a model file)."""
    try:
        if path.is_dir():
            return _saved_model_metadata(path / "keras_metadata.pb")
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        import h5py

        with h5py.File(path, "r") as h5:
            raw = h5.attrs.get("model_config")
        return json.loads(raw) if raw is not None else None
    except (OSError, KeyError, ValueError):  # not HDF5 or zip, no config, not JSON
        return None


def _saved_model_metadata(metadata: Path) -> list | None:
    """Each node's metadata in a SavedModel's keras_metadata.pb (its class and config)."""
    from tf_keras.protobuf import saved_metadata_pb2

    if not metadata.is_file():
        return None
    saved = saved_metadata_pb2.SavedMetadata()
    saved.ParseFromString(metadata.read_bytes())
    return [json.loads(node.metadata) for node in saved.nodes if node.metadata]


def stored_entries(config, outer_name=None):
    """Every (class name, layer name, entry) of a stored config, at every depth: any dict
    with a `class_name` key is an entry, named by its config or by its parent's record."""
    if isinstance(config, dict):
        if "class_name" in config:
            inner = config.get("config")
            name = inner.get("name") if isinstance(inner, dict) else None
            yield config["class_name"], name or config.get("name") or outer_name, config
        for value in config.values():
            yield from stored_entries(value, config.get("name") or outer_name)
    elif isinstance(config, list):
        for value in config:
            yield from stored_entries(value, outer_name)


def refuse_stored_code(path: Path) -> None:
    """One line naming the first thing in `path` that would run code, or that is not a plain
    known Keras class, when loaded. A SavedModel's graph is checked too."""
    if path.is_dir():
        if not (path / "keras_metadata.pb").is_file():
            raise EdgefireError(f"{path}: a SavedModel without Keras metadata; save it with "
                                "tf_keras (model.save(folder))")
        refuse_unsafe_graph(path)
    config = stored_config(path)
    if config is None:
        return  # Keras's own error follows: not a readable model
    for class_name, name, entry in stored_entries(config):
        judge(path, class_name, name, entry)


def judge(path: Path, class_name, name, entry: dict) -> None:
    """An error unless this stored entry is a plain known class from Keras's own modules."""
    label = f"layer {name!r}" if name else "an unnamed entry"
    if class_name in CODE_CLASSES:
        raise EdgefireError(
            f"{path}: {label} is a {class_name} layer, Python code stored in the model file; "
            "not run (--trust-model-code runs it, for a file you trust)")
    module = entry.get("module")
    if module is not None and str(module).split(".")[0] not in KERAS_MODULES:
        raise EdgefireError(f"{path}: {label} names a class from module {module!r}, not "
                            "Keras; not loaded")
    if class_name in OP_CLASSES:
        function = (entry.get("config") or {}).get("function")
        if not isinstance(function, str) or function not in PURE_FUNCTIONS:
            raise EdgefireError(  # a list there is a Lambda's serialized bytecode
                f"{path}: {label} calls the TensorFlow function {str(function)[:80]!r}, which "
                "is not among the pure math functions edgefire loads; not run "
                "(--trust-model-code runs it, for a file you trust)")
        return
    if not isinstance(class_name, str) or class_name not in plain_classes():
        raise EdgefireError(
            f"{path}: {label} is a custom class ({class_name}) that Keras does not know; its "
            "code is not in the file, so it cannot be loaded")


# ops of a SavedModel's graph that compute on tensors and the model's own variables only
GRAPH_OPS = frozenset({
    "Const", "Placeholder", "PlaceholderWithDefault", "Identity", "IdentityN", "NoOp",
    "StopGradient", "PreventGradient", "VarHandleOp", "ReadVariableOp", "AssignVariableOp",
    "AssignAddVariableOp", "AssignSubVariableOp", "VarIsInitializedOp",
    "PartitionedCall", "StatefulPartitionedCall", "If", "StatelessIf", "While",
    "StatelessWhile", "Case", "StatelessCase",
    "Conv2D", "Conv2DBackpropInput", "DepthwiseConv2dNative", "Conv3D", "BiasAdd",
    "MatMul", "BatchMatMulV2", "BatchMatMulV3", "FusedBatchNorm", "FusedBatchNormV3",
    "MaxPool", "AvgPool", "Relu", "Relu6", "LeakyRelu", "Elu", "Selu", "Softplus",
    "Softsign", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Erf",
    "Add", "AddV2", "AddN", "Sub", "Mul", "MulNoNan", "RealDiv", "Div", "DivNoNan",
    "FloorDiv", "FloorMod", "Neg", "Abs", "Sqrt", "Rsqrt", "Square", "SquaredDifference",
    "Pow", "Exp", "Log", "Log1p", "Reciprocal", "Maximum", "Minimum", "Round", "Floor",
    "Ceil", "Sign", "ClipByValue", "Mean", "Sum", "Max", "Min", "Prod", "ArgMax",
    "ArgMin", "Greater", "GreaterEqual", "Less", "LessEqual", "Equal", "NotEqual",
    "LogicalAnd", "LogicalOr", "LogicalNot", "Select", "SelectV2", "Cast",
    "Reshape", "Transpose", "ConcatV2", "Concat", "Pack", "Unpack", "Split", "SplitV",
    "Squeeze", "ExpandDims", "Pad", "PadV2", "MirrorPad", "Tile", "BroadcastTo",
    "BroadcastArgs", "Shape", "ShapeN", "Size", "Rank", "Fill", "ZerosLike", "OnesLike",
    "Range", "StridedSlice", "Slice", "GatherV2", "GatherNd", "DepthToSpace",
    "SpaceToDepth", "ResizeBilinear", "ResizeNearestNeighbor", "L2Loss", "Einsum",
    "EnsureShape", "CheckNumerics",
    # dropout and noise layers draw random numbers (training only)
    "RandomUniform", "RandomStandardNormal", "TruncatedNormal", "RandomUniformInt",
    "StatelessRandomUniformV2", "StatelessRandomNormalV2", "StatelessRandomGetKeyCounter",
    "StatelessRandomGetAlg", "StatelessRandomUniform", "StatelessRandomNormal",
})
# checkpoint ops: only in the saver's own functions (`__inference__traced_save_N`, `_restore_`)
CHECKPOINT_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename",
                            "StringJoin", "StaticRegexFullMatch", "DisableCopyOnRead"})
SAVER_FUNCTIONS = ("__inference__traced_save_", "__inference__traced_restore_")


def refuse_unsafe_graph(folder: Path) -> None:
    """One line naming the first op of the SavedModel's graph that could read or write
    anything but tensors, read from `saved_model.pb` before TensorFlow loads it."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString((folder / "saved_model.pb").read_bytes())
    except Exception as exc:  # protobuf's DecodeError and OSError
        raise EdgefireError(f"{folder}: saved_model.pb is unreadable "
                            f"({type(exc).__name__})") from None
    for graph in saved.meta_graphs:
        saver_nodes = {graph.saver_def.save_tensor_name.split(":")[0],
                       graph.saver_def.restore_op_name.split(":")[0]}
        for node in graph.graph_def.node:
            _judge_op(folder, node, "graph", checkpoint_ops=False,
                      calls_saver=node.name in saver_nodes)
        for function in graph.graph_def.library.function:
            name = function.signature.name
            for node in function.node_def:
                _judge_op(folder, node, f"function {name!r}",
                          checkpoint_ops=name.startswith(SAVER_FUNCTIONS), calls_saver=False)


def _judge_op(folder: Path, node, where: str, checkpoint_ops: bool, calls_saver: bool):
    """An op is allowed when it computes (or, in the saver's functions, checkpoints); only
    the saver's own graph nodes may call the saver's functions."""
    allowed = GRAPH_OPS | CHECKPOINT_OPS if checkpoint_ops else GRAPH_OPS
    if node.op not in allowed:
        raise EdgefireError(f"{folder}: the SavedModel's {where} holds op {node.op!r} (node "
                            f"{node.name!r}), which can do more than compute; not loaded")
    called = [value.func.name for value in node.attr.values() if value.HasField("func")]
    called += [f.name for value in node.attr.values() for f in value.list.func]
    if not calls_saver and any(name.startswith(SAVER_FUNCTIONS) for name in called):
        raise EdgefireError(f"{folder}: the SavedModel's {where} calls its checkpoint "
                            f"functions (node {node.name!r}); not loaded")
