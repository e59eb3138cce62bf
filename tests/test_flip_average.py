"""Flip averaging (`--flip-average`): the shipped model scores each image and its mirror
image with one network and averages them, in Keras and in every converted file alike."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from edgefire.cli import app
from tests.conftest import TINY_TRAIN


def _network():
    from edgefire.tfenv import keras

    k = keras()
    image = k.Input(shape=(8, 8, 3))
    x = k.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(image)
    x = k.layers.GlobalAveragePooling2D()(x)
    return k.Model(image, k.layers.Dense(3, activation="softmax", name="scores")(x),
                   name="tiny")


def _images(count: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, 8, 8, 3), dtype=np.uint8)


def test_a_flip_averaged_model_is_the_mean_of_both_views_and_loads_without_code(tmp_path):
    from edgefire import models
    from edgefire.models import flip_average

    network = _network()
    model = flip_average.averaged(network)
    x = _images(6).astype("float32") / 255
    expected = (network.predict(x, verbose=0) + network.predict(x[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-6)
    assert len(model.get_weights()) == len(network.get_weights())  # one network, not two
    models.save_model(model, tmp_path / "model.h5")
    loaded = models.load_model(tmp_path / "model.h5")  # the file's config judged: no code
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)
    assert flip_average.network_of(loaded) is not None
    assert flip_average.network_of(network) is None
    assert models.multiply_accumulates(loaded) == 2 * models.multiply_accumulates(network)


def test_its_int8_tflite_holds_the_network_once_and_runs_in_tflite_micro(tmp_path):
    from edgefire import runtimes, tflite_converter
    from edgefire.contract import InputContract
    from edgefire.models import flip_average

    network, contract = _network(), InputContract(size=8)
    model = flip_average.averaged(network)
    files = {}
    for name, keras_model in (("plain", network), ("averaged", model)):
        files[name] = tmp_path / f"{name}.tflite"
        files[name].write_bytes(tflite_converter.convert(keras_model, "int8", "int8",
                                                         _images(50), False, contract))
    # the same weights once: a few small ops more, not a second copy of the network
    assert 0 < files["averaged"].stat().st_size - files["plain"].stat().st_size < 2_000
    x = _images(40)
    keras_says = model.predict(contract.normalize(x), verbose=0).argmax(axis=1)
    litert = runtimes.predict(runtimes.open_model(files["averaged"], contract=contract), x)
    micro = runtimes.predict(runtimes.open_model(files["averaged"], contract=contract,
                                                 runtime="tflite-micro"), x)
    np.testing.assert_array_equal(micro, litert)  # shapes planned right: both views run
    assert np.mean(litert == keras_says) >= 0.9


def test_what_a_flip_averaged_model_cannot_be_is_one_line(image_folder, tmp_path):
    data = ["--data", str(image_folder)]
    pruned = CliRunner().invoke(app, ["build", "--flip-average", *data, "--artifacts",
                                      str(tmp_path / "none")])
    assert pruned.exit_code == 2 and "--flip-average ships a model that is neither pruned " \
        "nor QAT-trained: give --sparsity 0" in pruned.output, pruned.output
    assert not (tmp_path / "none").exists()
    out = tmp_path / "flipped"
    trained = CliRunner().invoke(app, ["train", "--flip-average", *data, "--artifacts",
                                       str(out), *TINY_TRAIN])
    assert trained.exit_code == 0, trained.output
    assert json.loads((out / "train.json").read_text())["config"]["flip_average"] is True
    for command, what in ((["prune"], "cannot be pruned"),
                          (["quantize", "--qat"], "cannot be fine-tuned with quantization")):
        result = CliRunner().invoke(app, [*command, "--artifacts", str(out)])
        assert result.exit_code != 0 and what in result.output, result.output
        assert "Traceback" not in result.output
    plain = CliRunner().invoke(app, ["build", *data, *TINY_TRAIN, "--sparsity", "0",
                                     "--artifacts", str(out), "--dry-run"])
    assert "> train: would run (changed: flip_average true -> unset)" in plain.output, \
        plain.output
