"""The walk over an ONNX graph: each value is a Keras tensor or a constant, in one layout.

ONNX images are NCHW; tf_keras's are NHWC. An image value (rank 4) is held as an NHWC Keras
tensor from the input on, so the converted model turns the layout once, at its input, and
each operator maps its ONNX axes through `nhwc_axis`. Constants (initializers, `Constant`
nodes, and anything computed from constants alone, such as the shape arithmetic of
`x.view(n, -1)`) stay NumPy arrays in ONNX's layout until an operator takes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from edgefire.errors import EdgefireError

NCHW_TO_NHWC = {0: 0, 1: 3, 2: 1, 3: 2}


@dataclass
class Value:
    """A Keras tensor (image tensors NHWC) or a constant in ONNX's layout."""

    tensor: object = None
    const: np.ndarray | None = None

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def rank(self) -> int:
        return self.const.ndim if self.is_const else len(self.tensor.shape)

    @property
    def shape(self) -> tuple:
        """The ONNX shape (NCHW for an image); None for a size not known."""
        if self.is_const:
            return tuple(self.const.shape)
        shape = tuple(self.tensor.shape)
        return (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else shape


def nhwc_axis(axis: int, rank: int) -> int:
    """An ONNX axis of a rank-`rank` value in the Keras tensor's axes."""
    axis = axis + rank if axis < 0 else axis
    return NCHW_TO_NHWC[axis] if rank == 4 else axis


class Graph:
    """The values by name, and what each node is: its operator, inputs and attributes."""

    def __init__(self, model, where: str):
        self.model, self.where = model, where
        self.values: dict[str, Value] = {}
        self.names: set[str] = set()
        from onnx import numpy_helper

        for initializer in model.graph.initializer:
            self.values[initializer.name] = Value(const=numpy_helper.to_array(initializer))

    def get(self, node, index: int) -> Value | None:
        """Input `index` of `node`, or None when it is absent (an optional input)."""
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.values:
            raise self.error(node, f"reads {name!r}, which no earlier node makes")
        return self.values[name]

    def const(self, node, index: int, default=None) -> np.ndarray | None:
        value = self.get(node, index)
        if value is None:
            return default
        if not value.is_const:
            raise self.error(node, f"input {index} must be a constant here")
        return value.const

    def name(self, node, suffix: str = "") -> str:
        """A unique, readable Keras layer name for what `node` makes."""
        base = re.sub(r"[^A-Za-z0-9_.]+", "_", (node.name or node.output[0]).strip("/")) or "node"
        name, count = base + suffix, 1
        while name in self.names:
            count += 1
            name = f"{base}{suffix}_{count}"
        self.names.add(name)
        return name

    def error(self, node, what: str) -> EdgefireError:
        return EdgefireError(f"{self.where}: node {node.name or node.output[0]!r} "
                             f"({node.op_type}) {what}")


def attributes(node) -> dict:
    """A node's attributes as Python values."""
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}
