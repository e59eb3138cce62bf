"""Flip averaging: a model that scores each image and its mirror image and ships the mean of
the two scores. The network is the same (the same weights and bytes, a few small ops more);
each image costs two passes. Horizontal flip is the training augmentation, so the network
knows both views; averaging them took the 150-epoch ResNet-8 from 84.72% to 85.74% on
CIFAR-10 (JPEG copy) validation (docs/results.md).

Built from tf functions (`tf.gather`, `tf.concat`, `tf.reshape`, `tf.math.reduce_mean`) that
a Keras file stores by name and `stored_code` takes as pure math, and that TFLite (GATHER,
CONCATENATION, RESHAPE, MEAN), TFLite Micro and ONNX all run.
"""

from __future__ import annotations

from edgefire.errors import EdgefireError
from edgefire.tfenv import keras, tensorflow

VIEWS = 2  # the image and its mirror image


def averaged(network):
    """`network` (image -> class scores) wrapped: both views of each image go through it as
    one batch (its weights stored once in a converted file: two calls would store its int8
    biases and their scales twice, about 11 KB for a ResNet-8), and each image's scores are
    the mean of its two views'. Convert it at a fixed batch (`static_batch`)."""
    tf, k = tensorflow(), keras()
    image = k.Input(shape=network.input_shape[1:], name="image")
    width = network.input_shape[2]
    mirror = tf.gather(image, list(range(width - 1, -1, -1)), axis=2)
    scores = network(tf.concat([image, mirror], axis=0))
    views = tf.reshape(scores, [VIEWS, -1, network.output_shape[-1]])
    return k.Model(image, tf.math.reduce_mean(views, axis=0), name=network.name)


def network_of(model):
    """The network a flip-averaged model wraps; None for any other model."""
    nested = [layer for layer in model.layers if isinstance(layer, keras().Model)]
    concatenated = any(layer.name.startswith("tf.concat") for layer in model.layers)
    return nested[0] if len(nested) == 1 and concatenated else None


def static_batch(model):
    """`model` as a function of one image: traced at batch 1, every tensor of a converted
    file has its true shape (from the Keras model, the converter fixes the input's batch
    only, and the two views' batch of 2 would be stored as 1, which TFLite Micro, planning
    its arena from the stored shapes, refuses)."""
    tf = tensorflow()
    spec = tf.TensorSpec([1, *model.input_shape[1:]], tf.float32, name="image")
    return tf.function(lambda image: model(image, training=False)).get_concrete_function(spec)


def refuse(model, path, what: str) -> None:
    """One line when `what` (pruning, QAT) is asked of a flip-averaged model: it works on a
    network, and the wrapper is not one."""
    if network_of(model) is not None:
        raise EdgefireError(f"{path}: a flip-averaged model (--flip-average) cannot be {what}; "
                            "train without --flip-average for that")
