"""A Keras 3 `.keras` file, rebuilt as the tf_keras (Keras 2) model the pipeline prunes and
quantizes: the same layers, names and weights, checked to give the same scores.

tensorflow-model-optimization works only on tf_keras models, so a Keras 3 model is read by
Keras 3 in safe mode (after edgefire's own check of its stored config), then each of its
layers is made again from its config by tf_keras and called on the same inputs.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np

from edgefire import tfenv
from edgefire.errors import EdgefireError
from edgefire.models import stored_code

# Keras 3 keys with no tf_keras meaning: weights are copied, so initializers do not matter
DROPPED_KEYS = ("kernel_initializer", "bias_initializer", "depthwise_initializer",
                "pointwise_initializer", "beta_initializer", "gamma_initializer",
                "moving_mean_initializer", "moving_variance_initializer", "embeddings_initializer")
SAME_SCORES = 1e-4  # largest difference between the two models' scores on random images


def is_keras3(path: Path) -> bool:
    """A .keras zip whose metadata.json says Keras 3 wrote it."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            version = json.loads(archive.read("metadata.json")).get("keras_version", "")
    except (KeyError, ValueError, OSError):
        return False
    return str(version).startswith("3")


def load(path: Path):
    """The tf_keras model equal to the Keras 3 model in `path`; one line for anything else."""
    if not stored_code.code_trusted():
        stored_code.refuse_stored_code(path)  # classes from Keras's own modules only
    with tfenv.quiet():
        import keras as keras3

        try:
            original = keras3.saving.load_model(path, compile=False,
                                                 safe_mode=not stored_code.code_trusted())
        except Exception as exc:  # Keras raises many types for a bad file
            raise EdgefireError(f"{path}: not a readable Keras 3 model "
                                f"({type(exc).__name__}: {exc})") from None
        rebuilt = to_tf_keras(original, path)
    check_same_scores(original, rebuilt, path)
    return rebuilt


def to_tf_keras(model, path: Path):
    """The Keras 3 `model` made again, layer by layer, by tf_keras."""
    keras2 = tfenv.keras()
    if model.__class__.__name__ == "Sequential":
        inputs = keras2.Input(model.inputs[0].shape[1:], name=model.inputs[0].name)
        outputs = inputs
        for layer in model.layers:
            outputs = _call(_remake(layer, path), layer, path, outputs)
        return keras2.Model(inputs, outputs, name=model.name)
    return _functional(model, path)


def _functional(model, path: Path):
    import keras as keras3

    keras2 = tfenv.keras()
    tensors = {id(t): keras2.Input(t.shape[1:], name=t.name) for t in model.inputs}
    inputs = [tensors[id(t)] for t in model.inputs]
    for operation in model.operations:
        if operation.__class__.__name__ == "InputLayer":
            continue
        for node in operation._inbound_nodes:
            if not all(id(t) in tensors for t in node.input_tensors):
                continue  # a call of this layer outside this model
            made = _remake(operation, path)
            args = keras3.tree.map_structure(lambda t: tensors.get(id(t), t),
                                             node.arguments.args)
            kwargs = keras3.tree.map_structure(lambda t: tensors.get(id(t), t),
                                               node.arguments.kwargs)
            result = _call(made, operation, path, *args, **kwargs)
            made_outputs = keras3.tree.flatten(result)
            for old, new in zip(keras3.tree.flatten(node.outputs), made_outputs, strict=True):
                tensors[id(old)] = new
    outputs = [tensors[id(t)] for t in model.outputs]
    return keras2.Model(inputs if len(inputs) > 1 else inputs[0],
                        outputs if len(outputs) > 1 else outputs[0], name=model.name)


def _remake(operation, path: Path):
    """The tf_keras counterpart of a Keras 3 layer (unbuilt: see `_call`) or of a model
    nested in the model (its weights copied)."""
    import keras as keras3

    if isinstance(operation, keras3.Model):
        return to_tf_keras(operation, path)
    return _layer(operation, path)


def _call(made, operation, path: Path, *args, **kwargs):
    """`made` called on tf_keras tensors (which builds it, its weights named in its scope),
    then given the Keras 3 layer's weights."""
    result = made(*args, **kwargs)
    if not isinstance(made, tfenv.keras().Model):  # a nested model has its weights already
        _copy_weights(operation, made, path)
    return result


def _layer(layer, path: Path):
    """A tf_keras layer of the same class and config; a key tf_keras does not take is left
    out when it is unset, and refused (one line) when it is set."""
    keras2 = tfenv.keras()
    if layer.__class__.__name__ == "Lambda":
        raise EdgefireError(f"{path}: layer {layer.name!r} is a Keras 3 Lambda layer, which "
                            "tf_keras cannot rebuild; save the model with tf_keras")
    if not hasattr(keras2.layers, layer.__class__.__name__):
        raise EdgefireError(f"{path}: layer {layer.name!r} ({layer.__class__.__name__}) has "
                            "no tf_keras counterpart; save the model with tf_keras")
    config = _plain(layer.get_config())
    for key in DROPPED_KEYS:
        config.pop(key, None)
    while True:
        try:
            return keras2.layers.deserialize({"class_name": layer.__class__.__name__,
                                              "config": config})
        except TypeError as exc:
            key = _unknown_key(exc, config)
            if key is None or config[key] not in (None, False, 0, "", [], {}):
                raise EdgefireError(f"{path}: layer {layer.name!r} ({layer.__class__.__name__})"
                                    f" uses a Keras 3 setting tf_keras does not have ({exc})"
                                    ) from None
            config.pop(key)


UNKNOWN_KEY = re.compile(r"(?:not understood:', |unexpected keyword argument )'(\w+)'")


def _unknown_key(exc: TypeError, config: dict) -> str | None:
    """The config key tf_keras named as one it does not take."""
    found = UNKNOWN_KEY.search(str(exc))
    return found.group(1) if found and found.group(1) in config else None


def _plain(value):
    """A Keras 3 config in tf_keras terms: a dtype policy becomes its name, and serialized
    objects (regularizers, constraints) lose the Keras 3-only keys."""
    if isinstance(value, dict):
        if value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
            return value["config"]["name"]
        return {key: _plain(item) for key, item in value.items()
                if key not in ("module", "registered_name", "shared_object_id")}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return value


def _copy_weights(source, target, path: Path) -> None:
    try:
        target.set_weights(source.get_weights())
    except ValueError as exc:
        raise EdgefireError(f"{path}: layer {source.name!r}: its weights do not fit the "
                            f"tf_keras layer ({exc})") from None


def check_same_scores(original, rebuilt, path: Path) -> None:
    """Both models on the same random images: the rebuilt one must give the same scores."""
    shape = [2 if size is None else size for size in original.inputs[0].shape]
    shape[1:3] = [32 if size is None else size for size in shape[1:3]]
    images = np.random.default_rng(0).uniform(0, 255, shape).astype("float32")
    with tfenv.quiet():
        difference = float(np.max(np.abs(np.asarray(original(images, training=False)) -
                                          rebuilt(images, training=False).numpy())))
    if not difference <= SAME_SCORES:
        raise EdgefireError(f"{path}: the Keras 3 model rebuilt in tf_keras gives different "
                            f"scores (largest difference {difference:.2g}); save it with "
                            "tf_keras")
