"""The reference model, batch-norm folding, and `edgefire train` end to end on tiny data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from edgefire import models
from edgefire.cli import app
from edgefire.errors import EdgefireError

REFERENCE_LAYERS = ["conv"] + [f"fire{i}/{part}" for i in range(2, 6)
                               for part in ("squeeze1x1", "expand1x1", "expand3x3")] + ["conv10"]


def _conv_names(model):
    return [layer.name for layer in model.layers if layer.weights]


def test_reference_has_mission_parameters_names_and_shapes():
    model = models.build("squeezenet")
    assert model.count_params() == 122_986
    assert _conv_names(model) == REFERENCE_LAYERS
    assert model.output_shape == (None, 10)
    shapes = {layer.name: layer.output_shape[1:] for layer in model.layers}
    assert shapes["conv"] == (15, 15, 64) and shapes["pool1"] == (7, 7, 64)
    assert shapes["fire3/concat"] == (7, 7, 128) and shapes["fire5/concat"] == (7, 7, 256)
    assert shapes["conv10"] == (7, 7, 10)


def test_reference_multiply_accumulates_counted_by_hand():
    # conv 15*15*64*27; fire2-5 squeeze + expand1x1 + expand3x3 on 7x7; conv10 49*10*256
    by_hand = (15 * 15 * 64 * 27 + 49 * (64 * 16 + 16 * 64 + 144 * 64)
               + 49 * (128 * 16 + 16 * 64 + 144 * 64) + 49 * (128 * 32 + 32 * 128 + 288 * 128)
               + 49 * (256 * 32 + 32 * 128 + 288 * 128) + 49 * 256 * 10)
    assert models.multiply_accumulates(models.build("squeezenet")) == by_hand == 6_284_480
    assert models.multiply_accumulates(models.build("squeezenet32")) > 2 * by_hand


def test_resnet8_is_mlperf_tinys_with_its_parameters_counted_by_hand():
    # stem 3x3x3x16; stack1 two 3x3 16->16; stack2 3x3 16->32, 3x3 32->32, 1x1 16->32;
    # stack3 the same to 64; dense 64->10; biases; batch norm 4 values a filter of 7 convs
    weights = (27 * 16 + 2 * 144 * 16 + 144 * 32 + 288 * 32 + 16 * 32 + 288 * 64 + 576 * 64
               + 32 * 64 + 64 * 10)
    biases = 16 * 3 + 32 * 3 + 64 * 3 + 10
    assert models.build("resnet8").count_params() == weights + biases == 77_706
    assert models.build("resnet8", batch_norm=True).count_params() == 77_706 + 4 * (
        16 * 3 + 32 * 2 + 64 * 2) == 78_666
    shapes = {layer.name: layer.output_shape[1:] for layer in models.build("resnet8").layers}
    assert shapes["stack1/add"] == (32, 32, 16) and shapes["stack2/add"] == (16, 16, 32)
    assert shapes["stack3/add"] == (8, 8, 64) and shapes["scores"] == (10,)


def test_builder_takes_input_shape_and_class_count():
    model = models.build("squeezenet", (32, 32, 3), 4)
    assert model.output_shape == (None, 4)


def test_unknown_arch_names_the_valid_ones():
    with pytest.raises(EdgefireError, match="squeezenet_bypass"):
        models.build("resnet")


@pytest.mark.parametrize("arch", list(models.ARCHITECTURES))
def test_folding_batch_norm_gives_the_plain_model_with_the_same_outputs(arch):
    trained = models.build(arch, batch_norm=True)
    rng = np.random.default_rng(0)
    for layer in trained.layers:  # non-trivial statistics, as after training
        if layer.name.endswith("_bn"):
            layer.set_weights([rng.uniform(0.5, 2, w.shape).astype("float32")
                               for w in layer.get_weights()])
    folded = models.fold_batch_norm(trained, arch)
    plain = models.build(arch)
    assert folded.count_params() == plain.count_params()
    assert [type(a) for a in folded.layers] == [type(b) for b in plain.layers]
    x = rng.random((8, 32, 32, 3)).astype("float32")
    assert np.allclose(trained(x, training=False), folded(x), atol=1e-5)


@pytest.mark.parametrize("arch", list(models.ARCHITECTURES))
def test_unfolding_batch_norm_computes_the_folded_model(arch):
    # the ResNets' 1x1 shortcuts have no batch norm: unfolding must leave them as they are
    rng = np.random.default_rng(0)
    folded = models.build(arch)
    x = rng.random((16, 32, 32, 3)).astype("float32")
    unfolded = models.unfold_batch_norm(folded, arch, x)
    assert np.allclose(unfolded(x, training=False), folded(x), atol=1e-4)


def test_resnet20_is_three_stacks_of_three_blocks():
    model = models.build("resnet20")
    adds = [layer.name for layer in model.layers if layer.name.endswith("/add")]
    def conv(k, cin, cout):
        return k * k * cin * cout + cout

    stack1 = 6 * conv(3, 16, 16)
    stack2 = conv(3, 16, 32) + conv(1, 16, 32) + 5 * conv(3, 32, 32)
    stack3 = conv(3, 32, 64) + conv(1, 32, 64) + 5 * conv(3, 64, 64)
    by_hand = conv(3, 3, 16) + stack1 + stack2 + stack3 + 64 * 10 + 10
    assert len(adds) == 9 and model.count_params() == by_hand == 271_690
    # batch norm (4 values a filter) after every 3x3 convolution, not after the shortcuts
    assert models.build("resnet20", batch_norm=True).count_params() == by_hand + 4 * (
        16 + 6 * 16 + 6 * 32 + 6 * 64) == 274_442
    shapes = {layer.name: layer.output_shape[1:] for layer in model.layers}
    assert shapes["stack1_3/add"] == (32, 32, 16) and shapes["stack3_3/add"] == (8, 8, 64)


def _batches(first_epoch, count, seed=0):
    from edgefire.contract import InputContract
    from edgefire.stages.fitting import training_dataset

    x = np.arange(20 * 32 * 32 * 3, dtype=np.uint8).reshape(20, 32, 32, 3)
    ds = training_dataset(x, np.arange(20), 8, seed, first_epoch, True, InputContract())
    return [(images.numpy(), labels.numpy()) for images, labels in ds.take(count)]


def test_training_batches_are_a_permutation_per_epoch_and_resume_exactly():
    run = _batches(0, 9)  # 3 batches (8, 8, 4) per epoch
    assert [len(labels) for _, labels in run] == [8, 8, 4] * 3
    for epoch in range(3):
        labels = np.concatenate([b[1] for b in run[3 * epoch:3 * epoch + 3]])
        assert sorted(labels) == list(range(20))
    assert not np.array_equal(run[0][1], run[3][1])  # each epoch is shuffled anew
    resumed = _batches(2, 3)  # a run resumed after 2 epochs sees exactly epoch 3
    for (a_images, a_labels), (b_images, b_labels) in zip(run[6:], resumed, strict=True):
        assert np.array_equal(a_labels, b_labels) and np.array_equal(a_images, b_images)
    assert not np.array_equal(_batches(0, 1, seed=1)[0][1], run[0][1])


def test_mixup_blends_each_image_and_its_label_with_the_mirror_images_alike():
    from edgefire.contract import InputContract
    from edgefire.stages.fitting import training_dataset

    x = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    plain = training_dataset(x, np.arange(20), 8, 0, 0, False, InputContract())
    mixed = training_dataset(x, np.arange(20), 8, 0, 0, False, InputContract(), mix=1.0)
    drawn = []
    for (images, labels), (blend, targets) in zip(plain.take(3), mixed.take(3), strict=True):
        images, labels, targets = images.numpy(), labels.numpy(), targets.numpy()
        assert targets.shape == (len(labels), 20)  # one weight per class
        np.testing.assert_allclose(targets.sum(axis=1), 1, atol=1e-6)
        rows = np.arange(len(labels))
        weight = targets[rows, labels]
        np.testing.assert_allclose(targets[rows, labels[::-1]], 1 - weight, atol=1e-6)
        np.testing.assert_allclose(blend.numpy(), weight[:, None, None, None] * images
                                   + (1 - weight[:, None, None, None]) * images[::-1],
                                   atol=1e-5)
        drawn.extend(weight)
    assert 0 < min(drawn) and max(drawn) < 1 and np.std(drawn) > 0.1  # Beta(1, 1) draws
    resumed = training_dataset(x, np.arange(20), 8, 0, 2, False, InputContract(), mix=1.0)
    again = training_dataset(x, np.arange(20), 8, 0, 0, False, InputContract(), mix=1.0)
    for a, b in zip(list(again.take(9))[6:], resumed.take(3), strict=True):  # epoch 3 alike
        assert all(np.array_equal(p.numpy(), q.numpy()) for p, q in zip(a, b, strict=True))


def test_cutout_blacks_out_one_square_of_each_image_and_nothing_else():
    from edgefire.contract import InputContract
    from edgefire.stages.fitting import training_dataset

    x = np.random.default_rng(0).integers(1, 256, (20, 32, 32, 3), dtype=np.uint8)  # no black
    plain = training_dataset(x, np.arange(20), 8, 0, 0, False, InputContract())
    cut = training_dataset(x, np.arange(20), 8, 0, 0, False, InputContract(), cut=8)
    areas, corners = [], set()
    for (images, _), (blacked, _) in zip(plain.take(3), cut.take(3), strict=True):
        images, blacked = images.numpy(), blacked.numpy()
        for image, out in zip(images, blacked, strict=True):
            zero = (out == 0).all(axis=2)
            rows, cols = np.nonzero(zero.any(axis=1))[0], np.nonzero(zero.any(axis=0))[0]
            assert zero.sum() == len(rows) * len(cols)  # one rectangle ...
            assert len(rows) <= 8 and len(cols) <= 8  # ... of the square, clipped at borders
            np.testing.assert_array_equal(out[~zero], image[~zero])  # the rest untouched
            areas.append(zero.sum())
            corners.add((rows[0], cols[0]))
    assert max(areas) == 64 and min(areas) < 64 and len(corners) > 15
    again = training_dataset(x, np.arange(20), 8, 0, 0, False, InputContract(), cut=8)
    assert all(np.array_equal(a[0].numpy(), b[0].numpy())
               for a, b in zip(cut.take(3), again.take(3), strict=True))  # seeded


def test_the_loss_of_label_weights_is_the_weighted_loss_of_their_labels():
    import tensorflow as tf

    from edgefire.stages.fitting import Distillation, compile_model
    from edgefire.tfenv import keras

    model = keras().Sequential([keras().Input(shape=(4,)),
                                keras().layers.Dense(3, activation="softmax")])
    compile_model(model, 0.1, 0.1, "sgd", Distillation(0.9, 4.0))
    rng = np.random.default_rng(0)
    scores, teacher = (tf.nn.softmax(rng.normal(size=(4, 3)).astype("float32"))
                       for _ in range(2))
    a, b = np.array([0, 1, 2, 0]), np.array([1, 1, 0, 2])
    w = np.array([0.3, 0.5, 0.9, 1.0], dtype="float32")[:, None]
    blend = w * np.eye(3, dtype="float32")[a] + (1 - w) * np.eye(3, dtype="float32")[b]

    def loss(*targets):
        return model.loss(tf.concat(targets, axis=1), scores).numpy()

    def label(y):
        return y[:, None].astype("float32")

    np.testing.assert_allclose(loss(blend), w[:, 0] * loss(label(a))
                               + (1 - w[:, 0]) * loss(label(b)), rtol=1e-5)
    np.testing.assert_allclose(loss(blend, teacher), w[:, 0] * loss(label(a), teacher)
                               + (1 - w[:, 0]) * loss(label(b), teacher), rtol=1e-5)
    assert not np.allclose(loss(blend, teacher), loss(blend))  # the teacher's scores count


def test_mixup_and_cutout_train_with_a_teacher_from_a_config_file_and_are_recorded(
        trained_folder, image_folder, tmp_path):
    from edgefire import artifacts

    config = tmp_path / "mixup.toml"
    config.write_text("[train]\nmixup = 0.4\ncutout = 4\n")
    out = tmp_path / "mixed"
    args = ["--teacher", str(trained_folder), "--data", str(image_folder), "--epochs", "1",
            "--batch-size", "32", "--artifacts", str(out)]
    result = CliRunner().invoke(app, ["train", "--config", str(config), *args])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "train.json").read_text())["config"]["mixup"] == 0.4
    recorded = artifacts.load_manifest(out)["stages"]["train"]["config"]
    assert (recorded["mixup"], recorded["cutout"]) == (0.4, 4)
    plain = CliRunner().invoke(app, ["build", *args, "--sparsity", "0", "--dry-run"])
    assert "> train: would run (changed: cutout 4 -> unset, mixup 0.4 -> unset)" in \
        plain.output, plain.output


def test_train_writes_a_reloadable_model_history_plot_and_metadata(trained_folder,
                                                                    image_folder):
    from edgefire import data
    from edgefire.models import load_model

    meta = json.loads((trained_folder / "train.json").read_text())
    model = load_model(trained_folder / "trained.h5")
    assert model.count_params() == meta["parameters"] == 122_986
    assert _conv_names(model) == REFERENCE_LAYERS  # batch norm folded away
    assert model.get_layer("drop9").rate == 0.5  # the reference's, whatever training used
    assert meta["config"]["dropout"] == 0.1
    assert meta["val_accuracy"] > 0.5  # ten colours: chance is 0.1
    assert len(meta["history"]["val_accuracy"]) == meta["epochs"] == 3
    assert meta["classes"] == list(data.load(str(image_folder)).classes)  # the folders'
    assert meta["data"]["source"] == str(image_folder.resolve())
    assert meta["images_per_second"] > 0 and meta["data"]["fingerprint"]
    assert (trained_folder / "training.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((trained_folder / "manifest.json").read_text())
    assert manifest["artifacts"]["trained.h5"]["stage"] == "train"
    assert not list(trained_folder.glob("train_checkpoint*"))


def test_help_and_bad_options_do_not_import_tensorflow():
    import subprocess
    import sys

    probe = ("import sys; from typer.testing import CliRunner; from edgefire.cli import app; "
             "r = CliRunner().invoke(app, sys.argv[1:]); "
             "print(r.exit_code, 'tensorflow' in sys.modules)")
    for args, code in ((["--help"], 0), (["train", "--arch", "squeezenett"], 2)):
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                             text=True, check=True).stdout.split()
        assert out == [str(code), "False"]


@pytest.mark.parametrize("args, needle", [
    (["--epochs", "0"], "--epochs must be >= 1 and <= 10000 (got 0)"),
    (["--learning-rate", "0"], "--learning-rate must be > 0"),
    (["--dropout", "1"], "--dropout must be >= 0 and < 1 (got 1.0)"),
    (["--arch", "squeezenet33"], "did you mean 'squeezenet32'"),
])
def test_bad_train_options_exit_2_with_one_line(args, needle, tmp_path):
    result = CliRunner().invoke(app, ["train", "--artifacts", str(tmp_path), *args])
    assert result.exit_code == 2
    assert needle in result.output and "Traceback" not in result.output


def test_the_warmup_cosine_schedule_is_keras_cosine_decay_one_step_ahead_in_the_warmup():
    from edgefire.stages import fitting
    from edgefire.tfenv import keras

    ours = fitting.warmup_cosine_schedule()(0.1, 10, 100)
    theirs = keras().optimizers.schedules.CosineDecay(0.0, 90, warmup_target=0.1,
                                                      warmup_steps=10)
    rates = [(float(ours(step)), float(theirs(step))) for step in range(101)]
    assert all(abs(a - b) < 1e-7 for a, b in rates[10:])  # the cosine part: the same
    assert all(abs(a - theirs_next) < 1e-7 for (a, _), (_, theirs_next)
               in zip(rates[:10], rates[1:11], strict=True))  # the warm-up: one step ahead
    assert rates[0] == (pytest.approx(0.01), 0.0)


def test_a_student_distils_from_a_build_folder_and_records_its_teacher(trained_folder,
                                                                      image_folder,
                                                                      tmp_path):
    from edgefire import artifacts
    from edgefire.stages import teacher

    out = tmp_path / "student"
    args = ["train", "--arch", "resnet8", "--teacher", str(trained_folder), "--data",
            str(image_folder), "--epochs", "1", "--batch-size", "32", "--artifacts", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "train.json").read_text())
    assert meta["config"]["teacher"] == str(trained_folder.resolve())
    assert meta["config"]["arch"] == "resnet8" and meta["parameters"] == 77_706
    recorded = artifacts.load_manifest(out)["stages"]["train"]["config"]
    assert recorded["teacher_sha256"] == artifacts.sha256(teacher.source(str(trained_folder)))
    moved = shutil.copytree(trained_folder, tmp_path / "moved teacher")
    args[args.index("--teacher") + 1] = str(moved)
    again = CliRunner().invoke(app, ["build", *args[1:], "--sparsity", "0", "--dry-run"])
    assert "= train: up to date" in again.output, again.output  # the same bytes elsewhere


def test_a_teacher_of_other_classes_is_one_line(trained_folder, tmp_path):
    from edgefire.contract import InputContract
    from edgefire.stages import teacher

    with pytest.raises(EdgefireError, match="scores classes"):
        teacher.load(str(trained_folder), InputContract(), ("a", "b"))
