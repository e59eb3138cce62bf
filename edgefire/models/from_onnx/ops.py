"""One small function per ONNX operator, each making tf_keras layers (or a constant), and the
table from operator to function. A function takes the graph, the node and its attributes and
returns the values of the node's outputs.

Image tensors are NHWC here (see `graph`). Arithmetic with a constant becomes a TensorFlow
op on the Keras tensor (stored by tf_keras as a `TFOpLambda` of an allow-listed pure
function, see `stored_code`), so the converted model holds no code either.
"""

from __future__ import annotations

import math

import numpy as np

from edgefire.models.from_onnx.graph import Graph, Value, nhwc_axis
from edgefire.tfenv import keras, tensorflow

MAX_NEGATIVE = -3.0e38  # what max pooling pads with (float32's -inf does not serialize)


def _layers():
    return keras().layers


def _spatial(attrs: dict, key: str, default):
    return tuple(attrs.get(key, default))


def _pads(graph: Graph, node, attrs: dict, kernel, strides, dilations, height_width):
    """Explicit (top, bottom), (left, right) padding of a conv or pool, from `pads` or
    `auto_pad`."""
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", "VALID"):
        top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0]) if auto == "NOTSET" \
            else (0, 0, 0, 0)
        return (top, bottom), (left, right)
    pads = []
    for size, k, s, d in zip(height_width, kernel, strides, dilations, strict=True):
        if size is None:
            raise graph.error(node, f"auto_pad {auto} needs a fixed input size")
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        pads.append((small, large) if auto == "SAME_UPPER" else (large, small))
    return tuple(pads)


def _padded(graph: Graph, node, tensor, pads, value: float = 0.0):
    """`tensor` padded on height and width (nothing when no padding)."""
    if not any(p for pair in pads for p in pair):
        return tensor
    if value == 0.0:
        return _layers().ZeroPadding2D(pads, name=graph.name(node, "_pad"))(tensor)
    return tensorflow().pad(tensor, [[0, 0], list(pads[0]), list(pads[1]), [0, 0]],
                            constant_values=value)


def conv(graph: Graph, node, attrs: dict) -> list[Value]:
    x, weights = graph.get(node, 0), graph.const(node, 1)
    bias = graph.const(node, 2)
    out_channels, in_per_group, kh, kw = weights.shape
    groups = attrs.get("group", 1)
    strides, dilations = _spatial(attrs, "strides", (1, 1)), _spatial(attrs, "dilations", (1, 1))
    pads = _pads(graph, node, attrs, (kh, kw), strides, dilations, x.shape[2:])
    tensor = _padded(graph, node, x.tensor, pads)
    in_channels = in_per_group * groups
    common = dict(strides=strides, dilation_rate=dilations, padding="valid",
                  use_bias=bias is not None, name=graph.name(node))
    if groups > 1 and groups == in_channels:  # depthwise (with a channel multiplier)
        layer = _layers().DepthwiseConv2D((kh, kw), depth_multiplier=out_channels // groups,
                                          **common)
        kernel = weights.reshape(in_channels, out_channels // groups, kh, kw)
        kernel = kernel.transpose(2, 3, 0, 1)
    else:
        layer = _layers().Conv2D(out_channels, (kh, kw), groups=groups, **common)
        kernel = weights.transpose(2, 3, 1, 0)
    out = layer(tensor)
    layer.set_weights([kernel] + ([bias] if bias is not None else []))
    return [Value(out)]


def batch_norm(graph: Graph, node, attrs: dict) -> list[Value]:
    x = graph.get(node, 0)
    params = [graph.const(node, i) for i in range(1, 5)]  # scale, bias, mean, variance
    layer = _layers().BatchNormalization(axis=-1, epsilon=attrs.get("epsilon", 1e-5),
                                         name=graph.name(node))
    out = layer(x.tensor)
    layer.set_weights(params)
    return [Value(out)]


def relu(graph: Graph, node, attrs: dict) -> list[Value]:
    return [Value(_layers().ReLU(name=graph.name(node))(graph.get(node, 0).tensor))]


def clip(graph: Graph, node, attrs: dict) -> list[Value]:
    low = graph.const(node, 1, np.array(attrs.get("min", -np.inf)))
    high = graph.const(node, 2, np.array(attrs.get("max", np.inf)))
    if float(low) != 0.0:
        raise graph.error(node, f"clips from {float(low)}: edgefire takes Clip from 0 (ReLU, "
                                "ReLU6)")
    top = None if np.isinf(high) else float(high)
    return [Value(_layers().ReLU(max_value=top, name=graph.name(node))(
        graph.get(node, 0).tensor))]


def leaky_relu(graph: Graph, node, attrs: dict) -> list[Value]:
    layer = _layers().LeakyReLU(alpha=attrs.get("alpha", 0.01), name=graph.name(node))
    return [Value(layer(graph.get(node, 0).tensor))]


def prelu(graph: Graph, node, attrs: dict) -> list[Value]:
    x, slope = graph.get(node, 0), graph.const(node, 1)
    channels = x.shape[1]
    layer = _layers().PReLU(shared_axes=[1, 2] if x.rank == 4 else None,
                            name=graph.name(node))
    out = layer(x.tensor)
    alpha = np.broadcast_to(slope.reshape(-1), (channels,)).astype("float32")
    layer.set_weights([alpha.reshape(layer.get_weights()[0].shape)])
    return [Value(out)]


def activation(name: str):
    def make(graph: Graph, node, attrs: dict) -> list[Value]:
        layer = _layers().Activation(name, name=graph.name(node))
        return [Value(layer(graph.get(node, 0).tensor))]

    return make


def _scaled(tensor, weight: float, bias: float, name: str):
    """`tensor * weight + bias` per channel as a fixed 1x1 depthwise convolution: a layer that
    channel pruning thins and TFLite fuses, where TensorFlow ops would be opaque to both."""
    channels = int(tensor.shape[-1])
    layer = _layers().DepthwiseConv2D(1, use_bias=True, trainable=False, name=name)
    out = layer(tensor)
    layer.set_weights([np.full((1, 1, channels, 1), weight, "float32"),
                       np.full((channels,), bias, "float32")])
    return out


def _hard_sigmoid(tensor, alpha: float, beta: float, name: str):
    """clip(alpha * x + beta, 0, 1); on images, relu6(6 alpha x + 6 beta) / 6 in layers."""
    if len(tensor.shape) != 4:
        return tensorflow().clip_by_value(tensor * alpha + beta, 0.0, 1.0)
    six = _layers().ReLU(max_value=6.0, name=f"{name}_relu6")(
        _scaled(tensor, 6 * alpha, 6 * beta, f"{name}_affine"))
    return _scaled(six, 1 / 6, 0.0, f"{name}_sixth")


def hard_sigmoid(graph: Graph, node, attrs: dict) -> list[Value]:
    x = graph.get(node, 0).tensor
    return [Value(_hard_sigmoid(x, attrs.get("alpha", 0.2), attrs.get("beta", 0.5),
                                graph.name(node)))]


def hard_swish(graph: Graph, node, attrs: dict) -> list[Value]:
    x = graph.get(node, 0).tensor
    gate = _hard_sigmoid(x, 1 / 6, 0.5, f"{graph.name(node)}_gate")
    return [Value(_layers().Multiply(name=graph.name(node))([x, gate]))]


def _nhwc_const(const: np.ndarray, rank: int) -> np.ndarray:
    """A constant broadcast against a rank-4 image, turned to NHWC."""
    if rank != 4 or const.ndim == 0:
        return const.astype("float32")
    full = const.reshape((1,) * (4 - const.ndim) + const.shape)
    return full.transpose(0, 2, 3, 1).astype("float32")


LAYERS = {"Add": "Add", "Sub": "Subtract", "Mul": "Multiply"}
FUNCTIONS = {"Add": "add", "Sub": "subtract", "Mul": "multiply", "Div": "truediv"}


def arithmetic(graph: Graph, node, attrs: dict) -> list[Value]:
    """Add, Sub, Mul and Div, with NumPy's broadcasting (squeeze-and-excitation scales)."""
    a, b = graph.get(node, 0), graph.get(node, 1)
    if a.is_const and b.is_const:
        numpy = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}
        return [Value(const=numpy[node.op_type](a.const, b.const))]
    if not a.is_const and not b.is_const and node.op_type in LAYERS and a.rank == b.rank:
        layer = getattr(_layers(), LAYERS[node.op_type])(name=graph.name(node))
        return [Value(layer([a.tensor, b.tensor]))]
    rank = a.rank if not a.is_const else b.rank
    left = _nhwc_const(a.const, rank) if a.is_const else a.tensor
    right = _nhwc_const(b.const, rank) if b.is_const else b.tensor
    function = getattr(tensorflow().math, FUNCTIONS[node.op_type])
    return [Value(function(left, right))]


def concat(graph: Graph, node, attrs: dict) -> list[Value]:
    values = [graph.get(node, i) for i in range(len(node.input))]
    if all(v.is_const for v in values):
        return [Value(const=np.concatenate([v.const for v in values], axis=attrs["axis"]))]
    if any(v.is_const for v in values):
        raise graph.error(node, "joins a constant to a tensor")
    axis = nhwc_axis(attrs["axis"], values[0].rank)
    layer = _layers().Concatenate(axis=axis, name=graph.name(node))
    return [Value(layer([v.tensor for v in values]))]


def _ceil_extra(size: int, kernel: int, stride: int, pads: tuple) -> int:
    """Padding added at the end so that floor division gives ceil_mode's count of windows
    (the last must start inside the input or its leading padding, as PyTorch counts)."""
    span = size + pads[0] + pads[1] - kernel
    count = math.ceil(span / stride) + 1
    if (count - 1) * stride >= size + pads[0]:
        count -= 1
    return max((count - 1) * stride + kernel - (size + pads[0] + pads[1]), 0)


def _pool_geometry(graph: Graph, node, attrs: dict, x: Value):
    kernel = _spatial(attrs, "kernel_shape", ())
    strides = _spatial(attrs, "strides", (1, 1))
    if tuple(attrs.get("dilations", (1, 1))) != (1, 1):
        raise graph.error(node, "has dilations; edgefire pools without them")
    pads = _pads(graph, node, attrs, kernel, strides, (1, 1), x.shape[2:])
    extra = (0, 0)
    if attrs.get("ceil_mode", 0):
        if None in x.shape[2:]:
            raise graph.error(node, "uses ceil_mode, which needs a fixed input size")
        extra = tuple(_ceil_extra(size, k, s, p) for size, k, s, p in
                      zip(x.shape[2:], kernel, strides, pads, strict=True))
    return kernel, strides, pads, extra


def _tf_same(shape: tuple, kernel: tuple, strides: tuple, pads: tuple) -> bool:
    """Whether the padding (ceil_mode's included) is exactly what TensorFlow's 'same' pooling
    adds, which leaves the padded cells out of a maximum and out of an average's count: one
    pooling layer, with no padding op that TFLite and channel pruning would have to carry."""
    if None in shape:
        return False
    for size, k, s, pad in zip(shape, kernel, strides, pads, strict=True):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        if pad != (total // 2, total - total // 2):
            return False
    return True


def max_pool(graph: Graph, node, attrs: dict) -> list[Value]:
    x = graph.get(node, 0)
    kernel, strides, pads, extra = _pool_geometry(graph, node, attrs, x)
    pads = ((pads[0][0], pads[0][1] + extra[0]), (pads[1][0], pads[1][1] + extra[1]))
    if any(sum(pads, ())) and _tf_same(x.shape[2:], kernel, strides, pads):
        layer = _layers().MaxPooling2D(kernel, strides, padding="same", name=graph.name(node))
        return [Value(layer(x.tensor))]
    tensor = _padded(graph, node, x.tensor, pads, MAX_NEGATIVE)
    layer = _layers().MaxPooling2D(kernel, strides, padding="valid", name=graph.name(node))
    return [Value(layer(tensor))]


def _counted(size: int, kernel: int, stride: int, pads: tuple, extra: int,
             include_pad: bool) -> np.ndarray:
    """How many cells of each window along one axis the average divides by: the input's own,
    and the explicit padding's with `count_include_pad`; never ceil_mode's overhang."""
    low, high = (-pads[0], size + pads[1]) if include_pad else (0, size)
    windows = (size + pads[0] + pads[1] + extra - kernel) // stride + 1
    starts = np.arange(windows) * stride - pads[0]
    return np.array([max(min(s + kernel, high) - max(s, low), 1) for s in starts])


def average_pool(graph: Graph, node, attrs: dict) -> list[Value]:
    """An average over zero-padded windows, rescaled where a window counts fewer cells than
    the kernel has (PyTorch's `count_include_pad=False`, and ceil_mode's last windows)."""
    x = graph.get(node, 0)
    kernel, strides, pads, extra = _pool_geometry(graph, node, attrs, x)
    padded = ((pads[0][0], pads[0][1] + extra[0]), (pads[1][0], pads[1][1] + extra[1]))
    if not attrs.get("count_include_pad", 0) and _tf_same(x.shape[2:], kernel, strides, padded):
        layer = _layers().AveragePooling2D(kernel, strides, padding="same",
                                           name=graph.name(node))
        return [Value(layer(x.tensor))]
    tensor = _padded(graph, node, x.tensor, padded)
    layer = _layers().AveragePooling2D(kernel, strides, padding="valid", name=graph.name(node))
    pooled = layer(tensor)
    if not any(extra) and (attrs.get("count_include_pad", 0) or not any(sum(pads, ()))):
        return [Value(pooled)]
    if None in x.shape[2:]:
        raise graph.error(node, "averages over padding it does not count, which needs a "
                                "fixed input size")
    counts = [_counted(size, k, s, p, e, bool(attrs.get("count_include_pad", 0)))
              for size, k, s, p, e in zip(x.shape[2:], kernel, strides, pads, extra,
                                          strict=True)]
    scale = kernel[0] * kernel[1] / np.outer(*counts)
    return [Value(tensorflow().math.multiply(pooled, scale[None, :, :, None].astype("float32")))]


def global_pool(kind: str):
    def make(graph: Graph, node, attrs: dict) -> list[Value]:
        layer = getattr(_layers(), kind)(keepdims=True, name=graph.name(node))
        return [Value(layer(graph.get(node, 0).tensor))]

    return make


def reduce_mean(graph: Graph, node, attrs: dict) -> list[Value]:
    x = graph.get(node, 0)
    axes = attrs.get("axes")
    if axes is None:
        axes = graph.const(node, 1)
    axes = sorted(int(a) % x.rank for a in np.atleast_1d(axes))
    if x.rank != 4 or axes != [2, 3]:
        raise graph.error(node, f"averages over axes {axes}; edgefire takes the mean over "
                                "height and width")
    layer = _layers().GlobalAveragePooling2D(keepdims=bool(attrs.get("keepdims", 1)),
                                             name=graph.name(node))
    return [Value(layer(x.tensor))]


def _as_rows(graph: Graph, node, x: Value):
    """An image tensor flattened in ONNX's (C, H, W) order, one row an image; a global
    pooling that kept its 1x1 map is made again without it (what channel pruning follows)."""
    if x.rank != 4:
        return x.tensor
    tensor = x.tensor
    pool = tensor._keras_history.layer
    if type(pool).__name__ in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
        return type(pool)(name=graph.name(node))(pool.input)
    if x.shape[2:] != (1, 1):  # NHWC's order is not NCHW's: channels first, then flatten
        tensor = _layers().Permute((3, 1, 2), name=graph.name(node, "_nchw"))(tensor)
    return _layers().Flatten(name=graph.name(node))(tensor)


def flatten(graph: Graph, node, attrs: dict) -> list[Value]:
    x = graph.get(node, 0)
    if x.is_const:
        return [Value(const=x.const.reshape(x.const.shape[0], -1))]
    if attrs.get("axis", 1) != 1:
        raise graph.error(node, "flattens from an axis other than 1")
    return [Value(_as_rows(graph, node, x))]


def reshape(graph: Graph, node, attrs: dict) -> list[Value]:
    """Reshape, Squeeze and Unsqueeze of a tensor to one row an image (`x.view(n, -1)`,
    squeezing pooled height and width); of constants, NumPy's."""
    x = graph.get(node, 0)
    if x.is_const:
        return [Value(const=_const_reshape(graph, node, attrs, x.const))]
    target = _target_rank(graph, node, attrs, x)
    if target != 2:
        raise graph.error(node, f"reshapes an image tensor to rank {target}; edgefire takes "
                                "reshapes to one row an image")
    return [Value(_as_rows(graph, node, x))]


def _target_rank(graph: Graph, node, attrs: dict, x: Value) -> int:
    if node.op_type == "Reshape":
        return len(graph.const(node, 1))
    axes = attrs.get("axes")
    if axes is None:
        axes = graph.const(node, 1, np.array([], dtype=np.int64))
    change = len(np.atleast_1d(axes))
    if node.op_type == "Squeeze" and change == 0:
        change = sum(1 for size in x.shape[1:] if size == 1)
    return x.rank - change if node.op_type == "Squeeze" else x.rank + change


def _const_reshape(graph: Graph, node, attrs: dict, value: np.ndarray) -> np.ndarray:
    if node.op_type == "Reshape":
        return value.reshape(graph.const(node, 1))
    axes = attrs.get("axes")
    if axes is None:
        axes = graph.const(node, 1)
    axes = tuple(int(a) for a in np.atleast_1d(axes))
    if node.op_type == "Squeeze":
        return np.squeeze(value, axis=axes or None)
    return np.expand_dims(value, axis=axes)


def gemm(graph: Graph, node, attrs: dict) -> list[Value]:
    """Gemm, and MatMul (then an Add of a bias), as a Dense layer."""
    x, weights = graph.get(node, 0), graph.const(node, 1)
    if attrs.get("transA", 0):
        raise graph.error(node, "transposes its input (transA)")
    kernel = weights.T if attrs.get("transB", 0) else weights
    kernel = kernel * attrs.get("alpha", 1.0)
    bias = graph.const(node, 2)
    tensor = _as_rows(graph, node, x) if x.rank == 4 else x.tensor
    layer = _layers().Dense(kernel.shape[1], use_bias=bias is not None, name=graph.name(node))
    out = layer(tensor)
    weights_out = [kernel.astype("float32")]
    if bias is not None:
        weights_out.append(np.broadcast_to(bias * attrs.get("beta", 1.0),
                                           (kernel.shape[1],)).astype("float32"))
    layer.set_weights(weights_out)
    return [Value(out)]


def softmax(graph: Graph, node, attrs: dict) -> list[Value]:
    x = graph.get(node, 0)
    if x.rank != 2 or attrs.get("axis", -1) not in (-1, 1):
        raise graph.error(node, "is not a softmax over the class scores")
    return [Value(_layers().Softmax(name=graph.name(node))(x.tensor))]


def passthrough(graph: Graph, node, attrs: dict) -> list[Value]:
    """Identity, and Dropout at inference (its optional mask output is not used)."""
    return [graph.get(node, 0)]


def constant(graph: Graph, node, attrs: dict) -> list[Value]:
    from onnx import numpy_helper

    if "value" not in attrs:
        raise graph.error(node, "holds a constant of a kind edgefire does not read")
    return [Value(const=numpy_helper.to_array(attrs["value"]))]


def shape(graph: Graph, node, attrs: dict) -> list[Value]:
    """The shape of a value, the batch as 1 (shape arithmetic such as `x.view(n, -1)` keeps
    the batch in the first place, which `reshape` reads as one row an image)."""
    dims = [1 if size is None else size for size in graph.get(node, 0).shape]
    return [Value(const=np.array(dims, dtype=np.int64))]


def gather(graph: Graph, node, attrs: dict) -> list[Value]:
    data, indices = graph.const(node, 0), graph.const(node, 1)
    return [Value(const=np.take(data, indices, axis=attrs.get("axis", 0)))]


def cast(graph: Graph, node, attrs: dict) -> list[Value]:
    from onnx import helper

    value = graph.get(node, 0)
    if not value.is_const:
        return [value]  # float models: a cast of a float tensor changes nothing here
    return [Value(const=value.const.astype(helper.tensor_dtype_to_np_dtype(attrs["to"])))]


OPS = {
    "Conv": conv, "BatchNormalization": batch_norm, "Relu": relu, "Clip": clip,
    "LeakyRelu": leaky_relu, "PRelu": prelu, "Sigmoid": activation("sigmoid"),
    "Tanh": activation("tanh"), "HardSigmoid": hard_sigmoid, "HardSwish": hard_swish,
    "Add": arithmetic, "Sub": arithmetic, "Mul": arithmetic, "Div": arithmetic,
    "Concat": concat, "MaxPool": max_pool, "AveragePool": average_pool,
    "GlobalAveragePool": global_pool("GlobalAveragePooling2D"),
    "GlobalMaxPool": global_pool("GlobalMaxPooling2D"), "ReduceMean": reduce_mean,
    "Flatten": flatten, "Reshape": reshape, "Squeeze": reshape, "Unsqueeze": reshape,
    "Gemm": gemm, "MatMul": gemm, "Softmax": softmax, "Dropout": passthrough,
    "Identity": passthrough, "Constant": constant, "Shape": shape, "Gather": gather,
    "Cast": cast,
}
