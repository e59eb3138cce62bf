"""SqueezeNet for NxN images: the reference design and named variants (`--arch`).

Every builder returns a functional tf_keras model whose input is the input contract's
normalized pixels (`contract.py`) and whose output is softmax class scores. The networks are
fully convolutional: any supported size has the same parameters. With `batch_norm=True` a
builder adds batch normalization after every convolution, for training only:
`fold_batch_norm` folds it into the convolutions, giving the deployable model with exactly
the layers of `batch_norm=False`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgefire import artifacts
from edgefire.contract import InputContract
from edgefire.errors import EdgefireError
from edgefire.tfenv import keras

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.9  # Keras's 0.99 leaves the moving statistics stale after a short run
DROPOUT = 0.5  # the reference's rate; inert at inference, so training may use another
DEFAULT_SHAPE = InputContract().shape


def _conv(x, filters: int, kernel: int, name: str, batch_norm: bool, strides: int = 1,
          padding: str = "same", relu: bool = True):
    """A convolution with ReLU (or none); with batch_norm, conv -> `<name>_bn` ->
    `<name>_relu`."""
    layers = keras().layers
    if not batch_norm:
        return layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                             activation="relu" if relu else None, name=name)(x)
    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding, name=name)(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                  name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _fire(x, index: int, squeeze: int, expand: int, batch_norm: bool):
    """A fire module: 1x1 squeeze, then 1x1 and 3x3 expands concatenated on channels."""
    name = f"fire{index}"
    x = _conv(x, squeeze, 1, f"{name}/squeeze1x1", batch_norm)
    left = _conv(x, expand, 1, f"{name}/expand1x1", batch_norm)
    right = _conv(x, expand, 3, f"{name}/expand3x3", batch_norm)
    return keras().layers.Concatenate(axis=-1, name=f"{name}/concat")([left, right])


def _head(x, classes: int, batch_norm: bool, dropout: float):
    """Dropout, the 1x1 `conv10` classifier, global average pooling and softmax."""
    layers = keras().layers
    x = layers.Dropout(dropout, name="drop9")(x)
    x = _conv(x, classes, 1, "conv10", batch_norm, padding="valid")
    x = layers.GlobalAveragePooling2D(name="avgpool10")(x)
    return layers.Softmax(name="softmax")(x)


def squeezenet(input_shape=DEFAULT_SHAPE, classes: int = 10, batch_norm: bool = False,
               dropout: float = DROPOUT):
    """The reference SqueezeNet for 32x32 CIFAR-10 (after Iandola et al. 2016, "AlexNet-level
    accuracy with 50x fewer parameters and <0.5MB model size"): 122,986 parameters for
    32x32x3 and 10 classes, the layer names of the original."""
    layers = keras().layers
    inputs = layers.Input(shape=input_shape, name="image")
    x = _conv(inputs, 64, 3, "conv", batch_norm, strides=2, padding="valid")
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = _fire(x, 2, 16, 64, batch_norm)
    x = _fire(x, 3, 16, 64, batch_norm)
    x = _fire(x, 4, 32, 128, batch_norm)
    x = _fire(x, 5, 32, 128, batch_norm)
    return keras().Model(inputs, _head(x, classes, batch_norm, dropout), name="squeezenet")


def squeezenet_bypass(input_shape=DEFAULT_SHAPE, classes: int = 10,
                      batch_norm: bool = False, dropout: float = DROPOUT):
    """The reference with the paper's simple bypass: identity adds around fire3 and fire5."""
    layers = keras().layers
    inputs = layers.Input(shape=input_shape, name="image")
    x = _conv(inputs, 64, 3, "conv", batch_norm, strides=2, padding="valid")
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = _fire(x, 2, 16, 64, batch_norm)
    x = layers.Add(name="bypass3")([x, _fire(x, 3, 16, 64, batch_norm)])
    x = _fire(x, 4, 32, 128, batch_norm)
    x = layers.Add(name="bypass5")([x, _fire(x, 5, 32, 128, batch_norm)])
    return keras().Model(inputs, _head(x, classes, batch_norm, dropout),
                         name="squeezenet_bypass")


def squeezenet32(input_shape=DEFAULT_SHAPE, classes: int = 10, batch_norm: bool = False,
                 dropout: float = DROPOUT):
    """Adapted to 32x32: stride-1 first conv, pooling after fire3, so fire2-3 see 16x16."""
    layers = keras().layers
    inputs = layers.Input(shape=input_shape, name="image")
    x = _conv(inputs, 64, 3, "conv", batch_norm)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = _fire(x, 2, 16, 64, batch_norm)
    x = layers.Add(name="bypass3")([x, _fire(x, 3, 16, 64, batch_norm)])
    x = layers.MaxPooling2D(2, name="pool3")(x)
    x = _fire(x, 4, 32, 128, batch_norm)
    x = layers.Add(name="bypass5")([x, _fire(x, 5, 32, 128, batch_norm)])
    return keras().Model(inputs, _head(x, classes, batch_norm, dropout), name="squeezenet32")


def _residual(x, name: str, filters: int, strides: int, batch_norm: bool):
    """A residual block of ResNet v1: two 3x3 convolutions (the second without ReLU) added
    to the input, or to a 1x1 strided projection of it when the shape changes; then ReLU."""
    y = _conv(x, filters, 3, f"{name}/conv1", batch_norm, strides=strides)
    y = _conv(y, filters, 3, f"{name}/conv2", batch_norm, relu=False)
    if strides != 1:  # no batch norm on the projection, as in MLPerf Tiny's reference
        x = keras().layers.Conv2D(filters, 1, strides=strides, name=f"{name}/shortcut")(x)
    x = keras().layers.Add(name=f"{name}/add")([x, y])
    return keras().layers.ReLU(name=f"{name}/relu")(x)


def resnet8(input_shape=DEFAULT_SHAPE, classes: int = 10, batch_norm: bool = False,
            dropout: float = DROPOUT):
    """MLPerf Tiny's image-classification ResNet-8 (ResNet v1 for CIFAR-10, from its
    published description): a 3x3 stem of 16 filters, three residual stacks of 16, 32 and
    64 filters (the last two stride 2), global average pooling, a dense softmax: 78,666
    parameters for 32x32x3 and 10 classes as trained (MLPerf's count, batch norm included),
    77,706 once batch norm is folded. `dropout` is accepted and unused: it has none."""
    layers = keras().layers
    inputs = layers.Input(shape=input_shape, name="image")
    x = _conv(inputs, 16, 3, "conv", batch_norm)
    x = _residual(x, "stack1", 16, 1, batch_norm)
    x = _residual(x, "stack2", 32, 2, batch_norm)
    x = _residual(x, "stack3", 64, 2, batch_norm)
    return keras().Model(inputs, _dense_head(x, classes), name="resnet8")


def resnet20(input_shape=DEFAULT_SHAPE, classes: int = 10, batch_norm: bool = False,
             dropout: float = DROPOUT):
    """ResNet-20 for CIFAR-10 (He et al. 2016): resnet8's stem and head around three stacks
    of three residual blocks each (16, 32 and 64 filters), with 1x1 projections where the
    shape changes, as resnet8: 274,442 parameters as trained. A teacher for the small
    networks (`train --teacher`), and itself under 0.5 MB in int8."""
    inputs = keras().layers.Input(shape=input_shape, name="image")
    x = _conv(inputs, 16, 3, "conv", batch_norm)
    for stack, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, 4):
            strides = 2 if stack > 1 and block == 1 else 1
            x = _residual(x, f"stack{stack}_{block}", filters, strides, batch_norm)
    return keras().Model(inputs, _dense_head(x, classes), name="resnet20")


def _dense_head(x, classes: int):
    """Global average pooling and a dense softmax: the ResNets' classifier."""
    x = keras().layers.GlobalAveragePooling2D(name="avgpool")(x)
    return keras().layers.Dense(classes, activation="softmax", name="scores")(x)


ARCHITECTURES: dict[str, Callable] = {
    "squeezenet": squeezenet,
    "squeezenet_bypass": squeezenet_bypass,
    "squeezenet32": squeezenet32,
    "resnet8": resnet8,
    "resnet20": resnet20,
}


# Input sizes each architecture supports: the smallest leaves a 1x1 map after the pools;
# the largest is a guard against typos (memory grows with the square of the size).
SIZES = {"squeezenet": (8, 512), "squeezenet_bypass": (8, 512), "squeezenet32": (8, 512),
         "resnet8": (8, 512), "resnet20": (8, 512)}


def check_size(arch: str, size: int) -> None:
    """An error naming the supported range when `arch` cannot take size x size images."""
    low, high = SIZES[arch]
    if not low <= size <= high:
        raise EdgefireError(f"--image-size {size} is not supported by {arch} (from {low} to "
                            f"{high})")


def build(arch: str, input_shape=DEFAULT_SHAPE, classes: int = 10, batch_norm: bool = False,
          dropout: float = DROPOUT):
    """Build a named architecture; an unknown name is answered with the valid ones."""
    if arch not in ARCHITECTURES:
        raise EdgefireError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](input_shape, classes, batch_norm, dropout)


def from_function(source: str, input_shape, classes: int):
    """The model `FILE.py:FUNCTION` returns for (input_shape, classes), checked. The file is
    the user's own code, run because they named it; its errors are one line naming it."""
    file, _, function = source.rpartition(":")
    module = _run_user_file(source, "while being imported", _import_file, file)
    if not hasattr(module, function):
        raise EdgefireError(f"--arch {source}: the file has no function {function!r}")
    model = _run_user_file(source, f"in {function}()", getattr(module, function),
                           tuple(input_shape), classes)
    if not isinstance(model, keras().Model):
        raise EdgefireError(f"--arch {source} returned a {type(model).__name__}, not a tf_keras "
                            "Model (build it with tf_keras: TF_USE_LEGACY_KERAS=1)")
    want = (tuple(input_shape), classes)
    have = (tuple(model.input_shape[1:]), model.output_shape[-1])
    if have != want:
        raise EdgefireError(f"--arch {source} returned a model of input {have[0]} and "
                            f"{have[1]} outputs for input {want[0]} and {want[1]} classes")
    return model


def _import_file(file: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("edgefire_user_architecture", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_user_file(source: str, where: str, call, *args):
    """`call(*args)` of the user's code, with its own name as the program's (its argparse
    sees no edgefire options); an exit or an error of it is one line naming the file.
    Ctrl-C stays an interrupt."""
    import sys

    argv = sys.argv
    sys.argv = [source.rpartition(":")[0]]
    try:
        return call(*args)
    except SystemExit as exc:
        raise EdgefireError(f"--arch {source}: the file exited {where} "
                            f"(SystemExit {exc.code})") from None
    except Exception as exc:  # the user's code may raise anything
        raise EdgefireError(f"--arch {source} failed {where}: {type(exc).__name__}: "
                            f"{exc}") from None
    finally:
        sys.argv = argv


def set_dropout(model, rate: float) -> None:
    """Set the rate of every dropout layer (used in training only; inference ignores it)."""
    for layer in model.layers:
        if isinstance(layer, keras().layers.Dropout):
            layer.rate = rate


def fold_batch_norm(trained, arch: str):
    """The deployable model: each `<conv>_bn` folded into its convolution's kernel and bias."""
    shape = tuple(trained.input_shape[1:])
    classes = trained.output_shape[-1]
    folded = build(arch, shape, classes, batch_norm=False)
    names = {layer.name for layer in trained.layers}
    for layer in folded.layers:
        if not layer.weights:
            continue
        kernel, bias = trained.get_layer(layer.name).get_weights()
        if f"{layer.name}_bn" in names:
            gamma, beta, mean, var = trained.get_layer(f"{layer.name}_bn").get_weights()
            scale = gamma / (var + BN_EPSILON) ** 0.5
            kernel, bias = kernel * scale, beta + (bias - mean) * scale
        layer.set_weights([kernel, bias])
    return folded


def unfold_batch_norm(folded, arch: str, images: np.ndarray):
    """The training form of a folded model, for fine-tuning: batch norm back after every
    convolution, computing exactly the folded model at inference.

    Each `<conv>_bn` gets the mean and variance of its convolution's outputs on `images`
    (normalized model inputs) as moving statistics, and the matching scale and offset
    (gamma = sqrt(var + eps), beta = mean), so it is the identity until fine-tuning moves it.
    Why: fine-tuning the folded model has no batch norm to keep its steps scale-free; at
    pruning's learning rate it diverged on UCI digits at 32x32 (docs/measurements.md).
    """
    shape, classes = tuple(folded.input_shape[1:]), folded.output_shape[-1]
    model = build(arch, shape, classes, batch_norm=True)
    names = {layer.name for layer in model.layers}
    for layer in folded.layers:  # convolutions and dense layers
        if layer.weights:
            model.get_layer(layer.name).set_weights(layer.get_weights())
    convs = [layer for layer in model.layers  # not the ResNets' shortcuts, which have none
             if isinstance(layer, keras().layers.Conv2D) and f"{layer.name}_bn" in names]
    for layer in convs:
        bn = model.get_layer(f"{layer.name}_bn")
        channels = layer.filters
        bn.set_weights([np.ones(channels), np.zeros(channels), np.zeros(channels),
                        np.full(channels, 1 - BN_EPSILON)])  # the identity, for the probe
    probe = keras().Model(model.input, [layer.output for layer in convs])
    outputs = probe.predict(images, batch_size=256, verbose=0)
    for layer, out in zip(convs, outputs, strict=True):
        mean, var = out.mean(axis=(0, 1, 2)), out.var(axis=(0, 1, 2))
        model.get_layer(f"{layer.name}_bn").set_weights(
            [np.sqrt(var + BN_EPSILON), mean, mean, var])
    return model


def multiply_accumulates(model) -> int:
    """Multiply-accumulates of one image through the model's convolutions and dense layers
    (a flip-averaged model's: its network's, once for each view)."""
    from edgefire.models import flip_average

    network = flip_average.network_of(model)
    if network is not None:
        return flip_average.VIEWS * multiply_accumulates(network)
    layers = keras().layers
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.DepthwiseConv2D):  # one kernel window per output channel
            kernel, out = layer.depthwise_kernel.shape, layer.output_shape
            total += out[1] * out[2] * out[3] * kernel[0] * kernel[1]
        elif isinstance(layer, layers.Conv2D):
            kernel = layer.kernel.shape
            out = layer.output_shape
            total += out[1] * out[2] * out[3] * kernel[0] * kernel[1] * kernel[2]
        elif isinstance(layer, layers.Dense):
            total += layer.kernel.shape[0] * layer.kernel.shape[1]
    return int(total)


def h5_bytes(model) -> int:
    """Room to leave for a Keras HDF5 file of `model`: its weights (float32) twice, and 1 MB
    of structure."""
    return 8 * int(model.count_params()) + 1_000_000


def save_model(model, path: Path) -> None:
    artifacts.ensure_space(path, h5_bytes(model))
    with artifacts.atomic_path(path) as tmp:
        model.save(tmp, include_optimizer=False)


def load_model(path: Path, trust_code: bool | None = None):
    """Load a Keras model file, answering a corrupt or non-model file with one line.

    A model file is untrusted input: unless `trust_code` (by default: inside
    `stored_code.trusting_code`), what it stores is judged first (`stored_code`) and anything
    that would run code is refused before Keras deserializes anything.
    """
    from edgefire.models import stored_code

    trust_code = stored_code.code_trusted() if trust_code is None else trust_code
    if not trust_code:
        stored_code.refuse_stored_code(path)
    try:
        model = keras().models.load_model(path, compile=False, safe_mode=not trust_code)
    except Exception as exc:  # h5py and Keras raise many types for a bad file
        raise EdgefireError(f"{path}: not a readable Keras model (the file is damaged, or not "
                            f"a Keras model: {type(exc).__name__})") from None
    check_finite(model, path)
    return model


def check_finite(model, path) -> None:
    """Every weight a finite number: a NaN or infinity scores at chance and breaks the
    quantizers far from its cause, so it is named where the model is read."""
    for layer in model.submodules if hasattr(model, "submodules") else model.layers:
        for weight in getattr(layer, "weights", []):
            if not np.all(np.isfinite(weight.numpy())):
                raise EdgefireError(f"{path}: layer {layer.name!r} has NaN or infinite "
                                    f"weights ({weight.name}); the model cannot be used")


def kernel_sparsity(model, names=None) -> dict:
    """Measured fraction of zeros in each convolution kernel, and over those kernels together."""
    layers = [layer for layer in model.layers if isinstance(layer, keras().layers.Conv2D)
              and (names is None or layer.name in names)]
    per_layer, zeros, total = {}, 0, 0
    for layer in layers:
        kernel = layer.get_weights()[0]
        per_layer[layer.name] = float(np.mean(kernel == 0))
        zeros += int(np.sum(kernel == 0))
        total += kernel.size
    return {"layers": per_layer, "overall": zeros / total if total else 0.0}


def check_input_shape(model, splits, model_path: Path) -> None:
    """The model must take the data's image shape and give one score per class."""
    want = (tuple(splits.x_train.shape[1:]), len(splits.classes))
    have = (tuple(model.input_shape[1:]), model.output_shape[-1])
    if have != want:
        raise EdgefireError(f"{model_path}: model takes {have[0]} with {have[1]} classes, the "
                            f"data has {want[0]} with {want[1]} classes")
