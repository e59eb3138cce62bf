"""Channel (filter) pruning: remove whole filters so the dense int8 file itself shrinks.

The model is rebuilt thinner with the kept weights copied. Channels flow through the graph:
a convolution's kept filters are its output channels and the next layers' input channels;
concatenation lays its inputs' channels side by side; an addition ties its inputs channel by
channel, so the convolutions that feed it (the fire modules of a bypass variant, a residual
block and its shortcut) keep the same filters, chosen together. The classifier (the last
convolution or dense layer) keeps one output per class. Filters are ranked by the L1 norm of
their kernel, times the scale of the batch normalization after them when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgefire.errors import EdgefireError
from edgefire.tfenv import keras

# layers that keep each channel where it is (index maps pass through them)
PASS_THROUGH = ("InputLayer", "ReLU", "Activation", "MaxPooling2D", "AveragePooling2D",
                "Dropout", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Softmax",
                "ZeroPadding2D", "Rescaling", "Normalization", "BatchNormalization",
                "Flatten", "Concatenate", "Add", "Conv2D", "DepthwiseConv2D", "Dense",
                "Multiply", "Subtract", "LeakyReLU", "PReLU")
JOINS = ("Add", "Multiply", "Subtract")  # element-wise: they tie their inputs' channels


@dataclass(frozen=True)
class Plan:
    """Which filters of each pruned convolution stay (original indices, ascending)."""

    kept: dict[str, list[int]]
    ratio: float

    def filters(self, model) -> dict[str, dict]:
        return {name: {"before": int(model.get_layer(name).filters), "kept": len(kept)}
                for name, kept in self.kept.items()}


def inbound(layer) -> list:
    """The layers feeding `layer` (each layer is called once in the models pruned here)."""
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        raise EdgefireError(f"layer {layer.name!r} is used {len(nodes)} times; channel pruning "
                            "takes a graph where each layer is called once")
    found = nodes[0].inbound_layers
    return found if isinstance(found, list) else [found]


def check_prunable(model) -> None:
    """One line naming the first layer channel pruning cannot follow."""
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in PASS_THROUGH:
            raise EdgefireError(f"channel pruning cannot follow layer {layer.name!r} ({kind}): "
                                "it takes chains of convolutions, concatenations and "
                                "element-wise joins")
        if kind == "DepthwiseConv2D" and layer.depth_multiplier != 1:
            raise EdgefireError(f"channel pruning cannot follow layer {layer.name!r}: depth "
                                "multiplier other than 1")
        spatial = tuple(layer.input_shape[1:-1]) if kind == "Flatten" else ()
        if kind in ("Flatten", "Dense") and len(layer.input_shape) != 2 and spatial != (1, 1):
            raise EdgefireError(f"channel pruning cannot follow layer {layer.name!r} ({kind}) "
                                "on a spatial input: only after global pooling")


def classifier(model) -> str:
    """The last layer with weights that makes the class scores: never pruned."""
    scoring = [layer for layer in model.layers if type(layer).__name__ in ("Conv2D", "Dense")]
    return scoring[-1].name


def origins(model) -> tuple[dict, list]:
    """For each layer's output, the source of each channel ((conv, filter) or None), and the
    pairs of channel sources an addition ties together."""
    source, ties = {}, []
    for layer in model.layers:
        kind, parents = type(layer).__name__, inbound(layer) if layer._inbound_nodes else []
        if kind == "InputLayer" or not parents:
            source[layer.name] = [None] * int(layer.output.shape[-1])
        elif kind == "Conv2D":
            source[layer.name] = [(layer.name, f) for f in range(layer.filters)]
        elif kind == "Dense":
            source[layer.name] = [None] * layer.units
        elif kind == "Concatenate":
            source[layer.name] = [s for p in parents for s in source[p.name]]
        elif kind in JOINS:
            first = source[parents[0].name]
            for other in parents[1:]:
                ties += list(zip(first, source[other.name], strict=True))
            source[layer.name] = first
        else:
            source[layer.name] = source[parents[0].name]
    return source, ties


def importance(model, name: str) -> np.ndarray:
    """L1 norm of each filter's kernel, scaled by the batch norm after it (if any)."""
    kernel = model.get_layer(name).get_weights()[0]
    norms = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
    try:
        bn = model.get_layer(f"{name}_bn")
        gamma, _, _, var = bn.get_weights()
        norms = norms * np.abs(gamma) / np.sqrt(var + bn.epsilon)
    except ValueError:  # no batch norm after it
        pass
    return norms


@dataclass(frozen=True)
class Unit:
    """Convolutions whose filters are removed together (one, or those an addition ties), their
    filter groups (a filter of each member) and each group's importance."""

    members: frozenset[str]
    groups: list[list[tuple[str, int]]]
    scores: np.ndarray

    def kept(self, ratio: float) -> dict[str, list[int]]:
        """Each member's filters that stay when `ratio` of the groups go (at least one stays)."""
        count = max(1, round(len(self.groups) * (1 - ratio)))
        chosen = [self.groups[i] for i in sorted(np.argsort(self.scores)[::-1][:count])]
        return {name: sorted(f for g in chosen for n, f in g if n == name)
                for name in self.members}


def units(model) -> list[Unit]:
    """The model's prunable units: every convolution but the classifier, those tied by an
    addition as one."""
    check_prunable(model)
    protected = {classifier(model)}
    source, ties = origins(model)
    for layer in model.layers:  # a grouped convolution keeps its filters and its input's
        if type(layer).__name__ == "Conv2D" and layer.groups > 1:
            protected.add(layer.name)
            protected.update(s[0] for s in source[inbound(layer)[0].name] if s is not None)
    parent = {}

    def find(node):
        while parent.get(node, node) != node:
            node = parent[node]
        return node

    for a, b in ties:
        if a is None or b is None:  # a channel from outside any convolution: keep its ties
            protected.update(n[0] for n in (a, b) if n is not None)
        elif find(a) != find(b):
            parent[find(a)] = find(b)
    # protected ones too: a convolution tied to a protected one is kept with it
    convs = [layer.name for layer in model.layers if type(layer).__name__ == "Conv2D"]
    groups: dict = {}
    for name in convs:
        for f in range(model.get_layer(name).filters):
            groups.setdefault(find((name, f)), []).append((name, f))
    found = []
    for members in _tied_convs(groups):
        if members & protected:
            continue
        classes = [g for g in groups.values() if g[0][0] in members]
        norms = {name: importance(model, name) for name in members}
        scores = np.array([sum(norms[n][f] for n, f in g) for g in classes])
        found.append(Unit(frozenset(members), classes, scores))
    if not found:
        raise EdgefireError("--prune channels: the model has no convolution whose filters can "
                            "be removed (channel pruning thins convolutions other than the "
                            "classifier); use --prune magnitude, or --sparsity 0")
    return found


def plan(model, ratio: float, ratios: dict[frozenset, float] | None = None,
         found: list[Unit] | None = None) -> Plan:
    """`ratio` of the filters removed from every unit, or each unit's own of `ratios`
    (`found`: the model's units, when a caller plans many times)."""
    kept: dict[str, list[int]] = {}
    for unit in found if found is not None else units(model):
        kept.update(unit.kept((ratios or {}).get(unit.members, ratio)))
    return Plan(kept, ratio)


def _tied_convs(groups: dict) -> list[set]:
    """Sets of convolutions whose filters are tied (one set per lone convolution too)."""
    sets: list[set] = []
    for members in groups.values():
        names = {n for n, _ in members}
        if len(names) != len(members):
            raise EdgefireError(f"layers {sorted(names)} are joined by an addition whose "
                                "channels do not line up: cannot prune them consistently")
        joined = [s for s in sets if s & names]
        merged = names.union(*joined)
        sets = [s for s in sets if not s & names] + [merged]
    return sets


def _flow(model, chosen: Plan):
    """Each layer of `model` but the input, with its parents, the original channel indices
    it keeps of its (first) input and of its output under `chosen`."""
    index: dict[str, list[int]] = {}  # each layer's output: original channel indices kept
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            index[layer.name] = list(range(int(layer.output.shape[-1])))
            continue
        parents = inbound(layer)
        ins = [index[p.name] for p in parents]
        if kind == "Conv2D":
            out = chosen.kept.get(layer.name, list(range(layer.filters)))
        elif kind == "Concatenate":
            offsets = np.cumsum([0] + [int(p.output.shape[-1]) for p in parents[:-1]])
            out = [int(o) + i for o, idx in zip(offsets, ins, strict=True) for i in idx]
        elif kind == "Dense":
            out = list(range(layer.units))
        else:
            out = ins[0]
        index[layer.name] = out
        yield layer, parents, ins[0], out


def parameters(model, chosen: Plan) -> int:
    """The parameter count of `thin(model, chosen)`, without building it."""
    return sum(int(w.size) for layer, _, ins, out in _flow(model, chosen)
               for w in _sliced(layer, ins, out))


def thin(model, chosen: Plan):
    """The model rebuilt with only the kept filters, weights copied."""
    layers = keras().layers
    first = model.layers[0]
    built = {first.name: layers.Input(tuple(first.output.shape[1:]), name=first.name)}
    copies = []
    for layer, parents, ins, out in _flow(model, chosen):
        config = layer.get_config()
        if type(layer).__name__ == "Conv2D":
            config["filters"] = len(out)
        new = type(layer).from_config(config)
        inputs = [built[p.name] for p in parents]
        built[layer.name] = new(inputs if len(inputs) > 1 else inputs[0])
        copies.append((layer, new, ins, out))
    thinner = keras().Model(built[first.name], built[model.layers[-1].name], name=model.name)
    for old, new, ins, out in copies:
        new.set_weights(_sliced(old, ins, out))
    return thinner


def mute(model, chosen: Plan) -> None:
    """Make `model` compute what `thin(model, chosen)` does, in place, without rebuilding it:
    each layer that mixes channels (a convolution, a dense layer) gets zero weights on the
    input channels thinning would slice away. The removed channels still flow through the
    layers that keep channels apart (activations, batch norm, pooling, joins), but no layer
    reads them any more."""
    for layer, _, ins, _ in _flow(model, chosen):
        kind = type(layer).__name__
        if kind not in ("Conv2D", "Dense") or getattr(layer, "groups", 1) > 1:
            continue
        width = int(layer.input_shape[-1])
        if len(ins) < width:
            kernel, *rest = layer.get_weights()
            kernel[..., np.setdiff1d(np.arange(width), ins), :] = 0
            layer.set_weights([kernel, *rest])


def _sliced(layer, ins: list[int], out: list[int]) -> list[np.ndarray]:
    """`layer`'s weights for the kept input channels `ins` and output channels `out`."""
    kind, weights = type(layer).__name__, layer.get_weights()
    if not weights:
        return []
    if kind == "Conv2D" and layer.groups > 1:  # kept whole, with its input (see `units`)
        return weights
    if kind == "Conv2D":
        return [weights[0][:, :, ins][..., out], *(w[out] for w in weights[1:])]
    if kind == "DepthwiseConv2D":
        return [weights[0][:, :, ins], *(w[ins] for w in weights[1:])]
    if kind == "Dense":
        return [weights[0][ins], *weights[1:]]
    if kind == "PReLU" and weights[0].shape[-1] == int(layer.output.shape[-1]):
        return [weights[0][..., ins]]
    if kind in ("BatchNormalization", "Normalization") and len(weights[0]) == \
            int(layer.output.shape[-1]):
        return [w[ins] if np.ndim(w) and len(w) == len(weights[0]) else w for w in weights]
    return weights


def fold(model):
    """The model with each batch normalization that directly follows a convolution folded
    into it (kernel and bias scaled), the normalization layers gone."""
    follows = {}
    for layer in model.layers:
        parents = inbound(layer) if type(layer).__name__ != "InputLayer" else []
        if type(layer).__name__ == "BatchNormalization" and len(parents) == 1 and \
                type(parents[0]).__name__ == "Conv2D":
            follows[parents[0].name] = layer
    layers = keras().layers
    built, copies = {}, []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            built[layer.name] = layers.Input(tuple(layer.output.shape[1:]), name=layer.name)
            continue
        inputs = [built[p.name] for p in inbound(layer)]
        if kind == "BatchNormalization" and layer in follows.values():
            built[layer.name] = inputs[0]
            continue
        config = layer.get_config()
        if layer.name in follows:
            config["use_bias"] = True
        new = type(layer).from_config(config)
        built[layer.name] = new(inputs if len(inputs) > 1 else inputs[0])
        copies.append((layer, new))
    folded = keras().Model(built[model.layers[0].name], built[model.layers[-1].name],
                           name=model.name)
    for old, new in copies:
        weights = old.get_weights()
        if old.name in follows:
            bn = follows[old.name]
            gamma, beta, mean, var = bn.get_weights()
            scale = gamma / np.sqrt(var + bn.epsilon)
            bias = weights[1] if old.use_bias else np.zeros_like(mean)
            weights = [weights[0] * scale, beta + (bias - mean) * scale]
        new.set_weights(weights)
    return folded
