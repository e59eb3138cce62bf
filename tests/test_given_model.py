"""Bring your own model: a Keras classifier no one here trained, taken as it is or fine-tuned,
given a new head for other classes, and every bad model refused with one line."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from edgefire import records
from edgefire.cli import app
from edgefire.models import given as given_model
from edgefire.tfenv import keras
from tests import synthetic


def small_cnn(classes: int = 10, rescaling: bool = True, size: int = 32, channels: int = 3,
              seed: int = 0):
    """A user's own CNN: convolutions with batch norm, pooling, a dense softmax head."""
    layers = keras().layers
    keras().utils.set_random_seed(seed)
    inputs = layers.Input((size, size, channels), name="photo")
    x = layers.Rescaling(1 / 255.0)(inputs) if rescaling else inputs
    for filters in (8, 16):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras().Model(inputs, layers.Dense(classes, activation="softmax", name="logits")(x))


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def train_json(folder):
    return json.loads((folder / "train.json").read_text())


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("given") / "my_cnn.h5"
    small_cnn().save(path)
    return path


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    root = tmp_path_factory.mktemp("three") / "three"
    full = synthetic.write_image_folder(root.parent / "full", 20, 6)
    for split in ("train", "test"):
        for name in synthetic.CLASSES[:3]:
            shutil.copytree(full / split / name, root / split / name)
    return root


def test_a_given_model_as_it_is_keeps_its_answers_and_records_itself(cnn_file, image_folder,
                                                                      tmp_path):
    result = run("train", "--model", cnn_file, "--epochs", 0, "--data", image_folder,
                 "--artifacts", tmp_path)
    assert result.exit_code == 0, result.output
    meta = train_json(tmp_path)
    assert meta["config"]["arch"] == "my_cnn" and meta["epochs_run"] == 0
    assert meta["input"]["normalize"] == {"mean": [0.0] * 3, "std": [1.0] * 3}  # rescales itself
    given = meta["given_model"]
    assert given["head"] == "kept" and given["parameters_given"] == meta["parameters"]
    assert 0 <= given["test_accuracy_given"] <= 1 and given["sha256"]
    original = keras().models.load_model(cnn_file, compile=False)
    saved = keras().models.load_model(tmp_path / "trained.h5", compile=False)
    pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(saved(pixels).numpy(), original(pixels).numpy(), atol=1e-6)


def test_a_mean_and_std_become_the_models_first_layer(image_folder, tmp_path):
    model = small_cnn(rescaling=False)
    model.save(tmp_path / "minus_one.h5")
    result = run("train", "--model", tmp_path / "minus_one.h5", "--epochs", 0, "--mean", 127.5,
                 "--std", 127.5, "--data", image_folder, "--artifacts", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert train_json(tmp_path / "out")["input"]["normalize"]["std"] == [1.0] * 3
    saved = keras().models.load_model(tmp_path / "out" / "trained.h5", compile=False)
    pixels = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(saved(pixels).numpy(), model((pixels - 127.5) / 127.5).numpy(),
                               atol=1e-5)


def test_other_classes_get_a_new_head_that_trains(cnn_file, three_classes, tmp_path):
    result = run("train", "--model", cnn_file, "--epochs", 2, "--data", three_classes,
                 "--artifacts", tmp_path)
    assert result.exit_code == 0, result.output
    assert "replaced 'logits' (10 -> 3 classes)" in result.output
    meta = train_json(tmp_path)
    assert meta["given_model"]["head"] == "replaced 'logits' (10 -> 3 classes)"
    assert meta["classes"] == list(synthetic.CLASSES[:3])
    trained = keras().models.load_model(tmp_path / "trained.h5", compile=False)
    assert trained.output_shape == (None, 3)
    body = {layer.name: layer for layer in keras().models.load_model(cnn_file).layers}
    conv = next(layer for layer in trained.layers if layer.name.startswith("conv2d"))
    assert not np.array_equal(conv.get_weights()[0], body[conv.name].get_weights()[0])


def test_a_savedmodel_folder_is_taken(image_folder, tmp_path):
    small_cnn(seed=3).save(tmp_path / "exported")
    result = run("train", "--model", tmp_path / "exported", "--epochs", 0, "--data",
                 image_folder, "--artifacts", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert train_json(tmp_path / "out")["config"]["arch"] == "exported"


def _two_outputs(path):
    layers = keras().layers
    inputs = layers.Input((32, 32, 3))
    x = layers.GlobalAveragePooling2D()(inputs)
    keras().Model(inputs, [layers.Dense(10)(x), layers.Dense(10)(x)]).save(path)


def _lambda(path):
    layers = keras().layers
    inputs = layers.Input((32, 32, 3))
    marker = path.with_suffix(".ran")
    x = layers.Lambda(lambda t, m=str(marker): (open(m, "w").close(), t)[1], name="code")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    keras().Model(inputs, layers.Dense(10, activation="softmax")(x)).save(path)
    marker.unlink()


def _custom_layer(path):
    small_cnn().save(path)
    with h5py.File(path, "r+") as h5:
        config = json.loads(h5.attrs["model_config"])
        config["config"]["layers"][2]["class_name"] = "MyFancyConv"
        h5.attrs["model_config"] = json.dumps(config)


def keras3_cnn(classes: int = 10):
    """A model written with Keras 3 itself (not tf_keras): branches joined by concatenation
    and addition, batch norm, a softmax head."""
    import keras as keras3

    layers = keras3.layers
    keras3.utils.set_random_seed(0)
    inputs = keras3.Input((32, 32, 3), name="photo")
    x = layers.Rescaling(1 / 255.0)(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(x)))
    x = layers.Concatenate()([layers.Conv2D(4, 1)(x), layers.Conv2D(4, 3, padding="same")(x)])
    x = layers.Add()([x, layers.Conv2D(8, 1)(x)])
    x = layers.GlobalAveragePooling2D()(x)
    return keras3.Model(inputs, layers.Dense(classes, activation="softmax", name="scores")(x))


def _keras3_foreign_module(path):
    import zipfile

    keras3_cnn().save(path)
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    config["config"]["layers"][2]["module"] = "os"
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)


def _poisoned(value):
    def make(path):
        model = small_cnn()
        kernel, *rest = model.layers[2].get_weights()
        kernel[0, 0, 0, 0] = value
        model.layers[2].set_weights([kernel, *rest])
        model.save(path)

    return make


def _truncated(path):
    small_cnn().save(path)
    path.write_bytes(path.read_bytes()[:5000])


BAD_MODELS = [
    ("not a model", "notes.h5", lambda p: p.write_text("hello"), "not a readable Keras model"),
    ("truncated", "cut.h5", _truncated, "not a readable Keras model"),
    ("missing", "nowhere.h5", lambda p: None, "model file not found"),
    ("text file", "notes.txt", lambda p: p.write_text("hello"), "not a model file edgefire "
     "reads"),
    ("nan weights", "nan.h5", _poisoned(float("nan")), "has NaN or infinite weights"),
    ("infinite weights", "inf.h5", _poisoned(float("inf")), "has NaN or infinite weights"),
    ("two outputs", "two.h5", _two_outputs, "has 1 inputs and 2 outputs"),
    ("grayscale", "gray.h5", lambda p: small_cnn(channels=1).save(p),
     "a grayscale (1-channel) model"),
    ("lambda", "code.h5", _lambda, "layer 'code' is a Lambda layer"),
    ("lambda in a savedmodel", "code_folder", _lambda, "layer 'code' is a Lambda layer"),
    ("custom layer", "fancy.h5", _custom_layer, "custom class (MyFancyConv)"),
    ("keras 3 naming another module", "k3.keras", _keras3_foreign_module,
     "names a class from module 'os'"),
    ("size disagrees", "cnn.h5", lambda p: small_cnn().save(p),
     "--image-size 64 disagrees with the model's fixed input 32x32"),
    ("new head without epochs", "five.h5", lambda p: small_cnn(classes=5).save(p),
     "a new head needs training (give --epochs)"),
]


@pytest.mark.parametrize("case", BAD_MODELS, ids=[c[0] for c in BAD_MODELS])
def test_a_bad_model_is_one_line_and_runs_nothing(case, image_folder, tmp_path):
    name, file, make, needle = case
    path = tmp_path / file
    make(path)
    extra = ["--image-size", 64] if name == "size disagrees" else []
    result = run("train", "--model", path, "--epochs", 0, "--data", image_folder,
                 "--artifacts", tmp_path / "out", *extra)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("edgefire: error")]
    assert len(errors) == 1 and needle in errors[0], result.output
    assert not path.with_suffix(".ran").exists()
    assert not (tmp_path / "out" / "trained.h5").exists()


@pytest.mark.slow
def test_a_keras3_file_is_rebuilt_in_tf_keras_and_builds_as_it_is(image_folder, tmp_path):
    original = keras3_cnn()
    path = tmp_path / "k3.keras"
    original.save(path)
    # untrained: near chance, where one image in 200 moves the drop by 0.5 points
    result = run("build", "--quantize", "int8", "--model", path, "--epochs", 0,
                 "--prune-epochs", 1, "--micro-images", 20, "--max-drop", 5,
                 "--data", image_folder, "--artifacts", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "raw pixels 0-255 (the model rescales itself: layer 'rescaling" in result.output
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    rebuilt = keras().models.load_model(tmp_path / "out" / "trained.h5", compile=False)
    assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in
                                                        original.layers]
    np.testing.assert_allclose(rebuilt.predict(images, verbose=0),
                               np.asarray(original(images)), atol=1e-5)
    assert train_json(tmp_path / "out")["given_model"]["sha256"] == \
        given_model.fingerprint(str(path))


@pytest.mark.slow
def test_trust_model_code_lets_a_lambda_model_build(image_folder, tmp_path):
    path = tmp_path / "code.h5"
    _lambda(path)
    result = run("build", "--quantize", "int8", "--model", path, "--epochs", 0,
                 "--prune-epochs", 1, "--micro-images", 20, "--max-drop", 5,
                 "--data", image_folder, "--trust-model-code", "--artifacts", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert path.with_suffix(".ran").exists()  # the user said to run it, and it ran
    refused = run("verify", "--artifacts", tmp_path / "out")  # without the flag: refused
    assert refused.exit_code == 2 and "--trust-model-code" in refused.output


def test_head_is_found_behind_pooling_and_softmax():
    from edgefire import models

    model = models.build("squeezenet", (32, 32, 3), 10)
    layer, tail = given_model.scoring_layer(model)
    assert layer.name == "conv10" and [t.name for t in tail] == ["avgpool10", "softmax"]
    headed, replaced = given_model.new_head(model, 4, seed=0)
    assert replaced == "conv10" and headed.output_shape == (None, 4)


def test_mobilenet_v2_gets_a_new_head_and_counts_depthwise_work():
    from edgefire import models

    mobile = keras().applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35,
                                              weights=None, classes=10)
    headed, replaced = given_model.new_head(mobile, 3, seed=0)
    assert replaced == "predictions" and headed.output_shape == (None, 3)
    assert models.multiply_accumulates(mobile) > models.multiply_accumulates(
        keras().Model(mobile.input, mobile.get_layer("block_16_project").output))


@pytest.mark.slow
def test_a_given_model_builds_to_a_verified_folder_and_a_new_file_rebuilds(cnn_file,
                                                                           image_folder,
                                                                           tmp_path):
    cnn_file = shutil.copy(cnn_file, tmp_path / "my_cnn.h5")
    build = ["build", "--quantize", "int8", "--model", cnn_file, "--data", image_folder,
             "--epochs", 1, "--batch-size", 32, "--prune-epochs", 1, "--micro-images", 50,
             "--artifacts", tmp_path / "out"]
    result = run(*build)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out"
    report = json.loads((folder / "report.json").read_text())
    names = {row["name"] for row in report["artifacts"]}
    assert {"my_cnn_int8.tflite", "my_cnn_float32.onnx", "my_cnn_int8.onnx"} <= names
    quantized = json.loads((folder / "quantize.json").read_text())
    assert quantized["tensors"]["input"]["dtype"] == "uint8"
    assert quantized["tensors"]["input"]["scale"] == pytest.approx(1.0)  # raw pixels
    assert records.train(folder).contract.std == (1.0, 1.0, 1.0)
    again = run(*build)
    assert again.exit_code == 0 and "= train: up to date" in again.output
    assert not [line for line in again.output.splitlines() if line.startswith("> ")], \
        again.output  # no stage reran
    small_cnn(seed=7).save(cnn_file)  # the same name, other weights
    changed = run(*build, "--dry-run")
    assert changed.exit_code == 0, changed.output
    assert "> train: would run (changed: model_sha256" in changed.output, changed.output
    assert "> verify: would run (after train)" in changed.output


NETS = '''
import tf_keras as keras


def tiny(input_shape, classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="first")(inputs)
    x = keras.layers.Conv2D(classes, 1, name="last")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Softmax()(x))


def not_a_model(input_shape, classes):
    return 42


def broken(input_shape, classes):
    raise RuntimeError("my bug")
'''


def test_your_own_architecture_is_trained_by_the_recipe(image_folder, tmp_path):
    (tmp_path / "nets.py").write_text(NETS)
    result = run("train", "--arch", f"{tmp_path / 'nets.py'}:tiny", "--epochs", 1, "--data",
                 image_folder, "--artifacts", tmp_path / "out")
    assert result.exit_code == 0, result.output
    meta = train_json(tmp_path / "out")
    assert meta["config"]["arch"] == "tiny"
    assert meta["config"]["arch_file"] == f"{tmp_path / 'nets.py'}:tiny"
    trained = keras().models.load_model(tmp_path / "out" / "trained.h5", compile=False)
    assert [layer.name for layer in trained.layers if layer.weights] == ["first", "last"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["stages"]["train"]["config"]["arch_sha256"] == given_model.fingerprint(
        str(tmp_path / "nets.py"))


@pytest.mark.parametrize("function, needle", [
    ("nowhere", "the file has no function 'nowhere'"),
    ("not_a_model", "returned a int, not a tf_keras Model"),
    ("broken", "failed in broken(): RuntimeError: my bug"),
])
def test_your_own_architecture_failing_is_one_line(image_folder, tmp_path, function, needle):
    (tmp_path / "nets.py").write_text(NETS)
    result = run("train", "--arch", f"{tmp_path / 'nets.py'}:{function}", "--epochs", 1,
                 "--data", image_folder, "--artifacts", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert needle in result.output and result.output.count("edgefire: error") == 1


@pytest.mark.parametrize("source, needle", [
    ("import sys\nsys.exit(0)\n", "the file exited while being imported (SystemExit 0)"),
    ("import argparse\nparser = argparse.ArgumentParser()\nparser.add_argument('--width', "
     "required=True)\nparser.parse_args()\n",
     "the file exited while being imported (SystemExit 2)"),
    ("def net(input_shape, classes):\n    raise SystemExit(3)\n",
     "the file exited in net() (SystemExit 3)"),
])
def test_your_own_architecture_exiting_is_one_line_naming_the_file(source, needle,
                                                                  image_folder, tmp_path):
    (tmp_path / "exits.py").write_text(source)
    result = run("train", "--arch", f"{tmp_path / 'exits.py'}:net", "--epochs", 1,
                 "--data", image_folder, "--artifacts", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert f"--arch {tmp_path / 'exits.py'}:net: {needle}" in result.output
    assert result.output.count("edgefire: error") == 1
    assert "usage: edgefire" not in result.output  # argparse spoke under the file's name


def test_the_new_head_trains_alone_first_with_the_body_frozen(cnn_file, three_classes,
                                                              tmp_path):
    from edgefire import data
    from edgefire.config import TrainConfig
    from edgefire.stages import train

    config = TrainConfig(data=str(three_classes), model=str(cnn_file), head_epochs=2,
                         epochs=1, batch_size=16)
    model, size, _ = given_model.open_model(config.model, None)
    given = given_model.adapt(model, config.model, size, 3, None, None, 1, 0)
    splits = data.split(data.load(config.data, size), 10, 0)
    before = {layer.name: [w.copy() for w in layer.get_weights()]
              for layer in given.model.layers if layer.weights}
    train.train_head_alone(given.model, config, splits, tmp_path, given.contract, None)
    changed = {name for name, weights in before.items()
               if any(not np.array_equal(a, b) for a, b in
                      zip(weights, given.model.get_layer(name).get_weights(), strict=True))}
    assert changed == {"logits_new"}
    assert all(layer.trainable for layer in given.model.layers)  # every layer trains next


def test_build_takes_mean_and_std_as_train_does(image_folder, tmp_path):
    """build's --mean/--std reach the config as the text the user typed (once refused as
    'must be tuple[float, ...]'); the next check, the missing file, is what answers."""
    result = run("build", "--model", tmp_path / "nowhere.h5", "--mean", "127.5", "--std",
                 "127.5,127.5,127.5", "--data", image_folder, "--artifacts", tmp_path / "out")
    assert result.exit_code == 2 and "nowhere.h5: model file not found" in result.output, \
        result.output


def test_head_epochs_with_a_kept_head_is_one_line(cnn_file, image_folder, tmp_path):
    result = run("train", "--model", cnn_file, "--data", image_folder, "--epochs", 1,
                 "--head-epochs", 2, "--artifacts", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "already scores the data's 10 classes, so its head is kept" in result.output
    assert not (tmp_path / "out" / "trained.h5").exists()
