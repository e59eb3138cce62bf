"""A model the user brings (`--model FILE`): loaded without running code, checked to be an
image classifier, given the input contract it expects, and a new head for other classes.

Accepted: a tf_keras `.h5` or `.keras` file, a Keras 3 `.keras` file (rebuilt in tf_keras,
see `keras3`) and a tf_keras SavedModel folder. The build's
float model is this model (fine-tuned when `--epochs` > 0); its batch normalization stays
until conversion, where the TFLite converter folds it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefire import models
from edgefire.contract import InputContract
from edgefire.errors import EdgefireError
from edgefire.models import keras3
from edgefire.tfenv import keras

# layers between the scoring layer and the output that hold no weights: the head's tail
PICKLE_REFUSAL = (
    "{path}: {what}, which runs code when it is read; export the model to ONNX "
    "instead: model.eval(); torch.onnx.export(model, torch.randn(1, 3, 32, 32), "
    "'model.onnx') and give --model model.onnx")
# torch.export.load reads a .pt2's pickled weights with torch.load(weights_only=False)
PYTORCH_FILES = {".pt": "a PyTorch pickle", ".pth": "a PyTorch pickle",
                 ".pt2": "a PyTorch ExportedProgram, whose weights torch unpickles"}
TAIL_LAYERS = ("Softmax", "Activation", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
               "Flatten", "Reshape", "Dropout")
RESCALING_LAYERS = ("Rescaling", "Normalization")


@dataclass(frozen=True)
class Given:
    """The model ready to train or convert, the contract its input takes, what was done,
    and the model as it was read (before a new head or a normalization layer)."""

    model: object
    contract: InputContract
    notes: dict  # for train.json: the file, its fingerprint and format, what was done
    source: object = None
    new_head: bool = False  # its head was replaced to score the data's classes


def name_of(path: str) -> str:
    """A file-name-safe name for the build's files (`<name>_int8.tflite`)."""
    stem = Path(path).name.split(".")[0] if Path(path).is_file() else Path(path).name
    return re.sub(r"[^a-z0-9_]+", "_", stem.lower()).strip("_") or "model"


def fingerprint(path: str) -> str:
    """sha256 of the model file (of every file, by relative name, for a SavedModel folder)."""
    root = Path(path)
    if not root.exists():
        raise EdgefireError(f"{root}: model file not found")
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*")) if root.is_dir() else [root]:
        if file.is_file():
            digest.update(file.relative_to(root).as_posix().encode() if root.is_dir() else b"")
            digest.update(file.read_bytes())
    return digest.hexdigest()


MODEL_SUFFIXES = (".h5", ".hdf5", ".keras", ".onnx")


def check_file(path: str) -> None:
    """A model path that is missing or not of a kind edgefire reads: one line, said before
    anything is loaded."""
    root = Path(path)
    if not root.exists():
        raise EdgefireError(f"{root}: model file not found")
    if root.is_dir() and not (root / "saved_model.pb").exists():
        raise EdgefireError(f"{root}: not a SavedModel folder (no saved_model.pb)")
    if root.suffix.lower() in PYTORCH_FILES:
        raise EdgefireError(PICKLE_REFUSAL.format(path=root,
                                                  what=PYTORCH_FILES[root.suffix.lower()]))
    if root.is_file() and root.suffix.lower() not in MODEL_SUFFIXES:
        raise EdgefireError(f"{root}: not a model file edgefire reads (a tf_keras .h5 or "
                            ".keras file, a Keras 3 .keras file, a SavedModel folder or an "
                            ".onnx file)")


def load(path: str):
    """The Keras model in `path`, loaded in safe mode; one line for anything else."""
    root = Path(path)
    check_file(path)
    if keras3.is_keras3(root):
        model = keras3.load(root)
        models.check_finite(model, root)
    else:
        model = models.load_model(root)
    if not isinstance(model, keras().Model):
        raise EdgefireError(f"{root}: a SavedModel without Keras metadata; save it with "
                            "tf_keras (model.save(folder))")
    return model


def check_classifier(model, path: str) -> None:
    """One image input (rank 4, 3 channels), one output of one score per class."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise EdgefireError(f"{path}: the model has {len(model.inputs)} inputs and "
                            f"{len(model.outputs)} outputs; an image classifier has one each")
    shape = tuple(model.input_shape)
    if len(shape) != 4:
        raise EdgefireError(f"{path}: input shape {shape} is not an image batch (N, H, W, C)")
    if shape[3] == 1:
        raise EdgefireError(f"{path}: a grayscale (1-channel) model; edgefire builds RGB models "
                            "(3 channels): gray images are converted to RGB")
    if shape[3] != 3:
        raise EdgefireError(f"{path}: input has {shape[3]} channels; an RGB image has 3")
    if len(model.output_shape) != 2:
        raise EdgefireError(f"{path}: output shape {tuple(model.output_shape)} is not one score "
                            "per class (N, classes)")


def input_size(model, path: str, image_size: int | None) -> int:
    """The model's fixed square input size, or `image_size` for a free spatial size."""
    _, height, width, _ = model.input_shape
    if height is None or width is None:
        if image_size is None:
            raise EdgefireError(f"{path}: the model takes any image size: give --image-size")
        return image_size
    if height != width:
        raise EdgefireError(f"{path}: input {height}x{width} is not square; edgefire feeds "
                            "N x N images")
    if image_size is not None and image_size != height:
        raise EdgefireError(f"--image-size {image_size} disagrees with the model's fixed input "
                            f"{height}x{width} ({path})")
    return int(height)


def rescales_itself(model) -> str | None:
    """The name of a Rescaling or Normalization layer right after the input, if any."""
    for layer in model.layers[1:3]:
        if type(layer).__name__ in RESCALING_LAYERS:
            return layer.name
    return None


def with_contract(model, size: int, mean, std, path: str) -> tuple[object, InputContract, str]:
    """The model and the contract of its input.

    A model that rescales itself takes raw pixels. A contract uint8 pixels can express
    directly (mean 0, one std) is kept; any other (per-channel, or a mean) is put into the
    model as a first Normalization layer, so the deployed file still takes raw pixels.
    """
    own = rescales_itself(model)
    if own and mean is None and std is None:
        return model, InputContract(size, (0.0,) * 3, (1.0,) * 3), \
            f"raw pixels 0-255 (the model rescales itself: layer {own!r})"
    mean = tuple(float(v) for v in (mean or (0.0,) * 3))
    std = tuple(float(v) for v in (std or (255.0,) * 3))
    if not any(mean) and len(set(std)) == 1:
        return model, InputContract(size, mean, std), f"(pixel - 0) / {std[0]:g}"
    layers = keras().layers
    inputs = layers.Input((size, size, 3), name="pixels")
    normalize = layers.Normalization(mean=list(mean), variance=[s * s for s in std],
                                     name="normalize")
    wrapped = keras().Model(inputs, model(normalize(inputs)), name=model.name)
    return wrapped, InputContract(size, (0.0,) * 3, (1.0,) * 3), \
        f"(pixel - {list(mean)}) / {list(std)}, as the model's first layer"


def scoring_layer(model):
    """The last layer with weights before the output, and the weightless layers after it."""
    layer, tail = model.layers[-1], []
    while type(layer).__name__ in TAIL_LAYERS or not layer.weights:
        tail.append(layer)
        inbound = layer._inbound_nodes[-1].inbound_layers
        if isinstance(inbound, list) or layer is model.layers[0]:
            raise EdgefireError(f"{model.name}: cannot find the layer that makes the class "
                                f"scores (before {layer.name!r})")
        layer = inbound
    if type(layer).__name__ not in ("Dense", "Conv2D"):
        raise EdgefireError(f"the layer that makes the class scores, {layer.name!r}, is a "
                            f"{type(layer).__name__}; a new head replaces a Dense or Conv2D")
    return layer, tail[::-1]


def new_head(model, classes: int, seed: int):
    """The model with its scoring layer (and the weightless tail after it) made anew for
    `classes` classes, initialized by `seed`; softmax at the end."""
    layer, tail = scoring_layer(model)
    config = layer.get_config()
    config.update(name=f"{layer.name}_new", activation="linear")
    config["units" if "units" in config else "filters"] = classes
    config["kernel_initializer"] = {"class_name": "GlorotUniform", "config": {"seed": seed}}
    x = type(layer).from_config(config)(layer.input)
    for after in tail:
        if type(after).__name__ in ("Softmax", "Activation"):
            continue
        x = type(after).from_config({**after.get_config(), "name": f"{after.name}_new"})(x)
    x = keras().layers.Softmax(name="scores")(x)
    return keras().Model(model.input, x, name=model.name), layer.name


def open_model(path: str, image_size: int | None) -> tuple[object, int, dict]:
    """The given model, checked to be an image classifier, its input size, and what it was
    made from (`format`; an ONNX file's opset, producer, and whether a softmax was added)."""
    if Path(path).suffix.lower() == ".onnx":
        return _open_onnx(Path(path), image_size)
    model = load(path)
    check_classifier(model, path)
    return model, input_size(model, path, image_size), {"format": "keras"}


def _open_onnx(path: Path, image_size: int | None) -> tuple[object, int, dict]:
    from edgefire.models import from_onnx

    check_file(str(path))
    onnx_model = from_onnx.read(path)
    _, height, width = from_onnx.input_shape(onnx_model, path)
    if height != width:
        raise EdgefireError(f"{path}: input {height}x{width} is not square; edgefire feeds "
                            "N x N images")
    if height is None and image_size is None:
        raise EdgefireError(f"{path}: the model takes any image size: give --image-size")
    if height is not None and image_size not in (None, height):
        raise EdgefireError(f"--image-size {image_size} disagrees with the model's fixed input "
                            f"{height}x{width} ({path})")
    size = height or image_size
    model, appended = from_onnx.convert(onnx_model, path, size)
    if appended:
        print(f"  {path.name} gives logits: a softmax is appended, so every file gives scores",
              flush=True)
    return model, size, {**from_onnx.describe(onnx_model), "softmax_appended": appended}


def prove_equal(given: Given, images: np.ndarray, mean, std) -> None:
    """An ONNX file's converted model and the file in onnxruntime on `images` (pixels 0-255,
    normalized as the file expects): their top-1 agreement and largest score difference go
    into the notes; below `SAME_TOP1` the build stops with one line."""
    from edgefire.models import from_onnx

    mean = np.array(mean or (0.0,) * 3, dtype=np.float32)
    std = np.array(std or (255.0,) * 3, dtype=np.float32)
    inputs = (images.astype(np.float32) - mean) / std
    path = Path(given.notes["file"])
    result = from_onnx.compare(path, given.source, inputs, given.notes["softmax_appended"])
    given.notes["equality"] = result
    if result["agreement"] < from_onnx.SAME_TOP1:
        node = from_onnx.first_difference(from_onnx.read(path), path,
                                          given.contract.size, inputs[:8])
        raise EdgefireError(f"{path}: the converted model agrees with the file in onnxruntime "
                            f"on {result['agreement']:.1%} of {result['images']} images (largest "
                            f"score difference {result['max_score_difference']:.3g}); at least "
                            f"{from_onnx.SAME_TOP1:.1%} is needed; the first node whose outputs "
                            f"differ: {node or 'none found'}")


def adapt(model, path: str, size: int, classes: int, mean, std, epochs: int,
          seed: int, head_epochs: int = 0, origin: dict | None = None) -> Given:
    """The given model adapted to the data's classes (a new head) and its input contract;
    `head_epochs` is refused for a model whose head is kept (nothing to train alone)."""
    source = model
    notes = {"file": path, "sha256": fingerprint(path), **(origin or {"format": "keras"}),
             "parameters_given": int(model.count_params()),
             "classes_given": int(model.output_shape[-1]), "head": "kept"}
    if model.output_shape[-1] != classes:
        if epochs == 0:
            raise EdgefireError(f"{path}: the model scores {model.output_shape[-1]} classes, "
                                f"the data has {classes}: a new head needs training (give "
                                "--epochs)")
        model, replaced = new_head(model, classes, seed)
        notes["head"] = f"replaced {replaced!r} ({notes['classes_given']} -> {classes} classes)"
    elif head_epochs:
        raise EdgefireError(f"--head-epochs {head_epochs}: {path} already scores the data's "
                            f"{classes} classes, so its head is kept and there is no new head "
                            "to train alone; leave --head-epochs out")
    model, contract, notes["contract"] = with_contract(model, size, mean, std, path)
    return Given(model, contract, notes, source, notes["head"] != "kept")
