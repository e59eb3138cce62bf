"""Channel pruning: a thinner model with consistent shapes, the same function at 0%, the
parameter counts computed by hand, tied additions, unsupported layers refused, a budget met."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgefire import models
from edgefire.cli import app
from edgefire.errors import EdgefireError
from edgefire.models import budget, channels, sensitivity
from edgefire.models.sensitivity import Step
from edgefire.tfenv import keras
from tests.conftest import BUILD


def trained_like(arch: str, seed: int = 0):
    """A batch-norm model with non-trivial statistics, as after training."""
    model = models.build(arch, batch_norm=True)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.name.endswith("_bn"):
            layer.set_weights([rng.uniform(0.5, 2, w.shape).astype("float32")
                               for w in layer.get_weights()])
        elif layer.weights:
            layer.set_weights([rng.normal(0, 0.1, w.shape).astype("float32")
                               for w in layer.get_weights()])
    return model


IMAGES = np.random.default_rng(1).uniform(0, 1, (6, 32, 32, 3)).astype("float32")


@pytest.mark.parametrize("arch", list(models.ARCHITECTURES))
def test_removing_no_filter_gives_back_the_same_outputs(arch):
    model = trained_like(arch)
    thin = channels.thin(model, channels.plan(model, 0.0))
    np.testing.assert_array_equal(thin.predict(IMAGES, verbose=0),
                                  model.predict(IMAGES, verbose=0))


@pytest.mark.parametrize("arch", list(models.ARCHITECTURES))
def test_folding_after_thinning_keeps_the_function(arch):
    thin = channels.thin(trained_like(arch), channels.plan(trained_like(arch), 0.4))
    folded = channels.fold(thin)
    assert not [layer for layer in folded.layers if "BatchNormalization" in str(type(layer))]
    np.testing.assert_allclose(folded.predict(IMAGES, verbose=0),
                               thin.predict(IMAGES, verbose=0), atol=1e-5)


@pytest.mark.parametrize("arch", list(models.ARCHITECTURES))
def test_parameters_are_counted_without_building_the_thinner_model(arch):
    model = trained_like(arch)
    found = channels.units(model)
    ratios = {unit.members: (0.125, 0.5, 0.75)[i % 3] for i, unit in enumerate(found)}
    for plan in (channels.plan(model, 0.0), channels.plan(model, 0.4),
                 channels.plan(model, 0.0, ratios, found)):
        assert channels.parameters(model, plan) == channels.thin(model, plan).count_params()


def assert_muting_computes_the_thinner_model(model, plan):
    muted = keras().models.clone_model(model)
    muted.set_weights(model.get_weights())
    channels.mute(muted, plan)
    expected = channels.thin(model, plan).predict(IMAGES, verbose=0)
    np.testing.assert_allclose(muted.predict(IMAGES, verbose=0), expected, atol=1e-6)
    assert np.abs(model.predict(IMAGES, verbose=0) - expected).max() > 1e-5  # it thinned


@pytest.mark.parametrize("arch", list(models.ARCHITECTURES))
def test_muting_the_removed_channels_computes_what_the_thinner_model_does(arch):
    model = trained_like(arch)
    found = channels.units(model)
    ratios = {unit.members: (0.125, 0.5, 0.75)[i % 3] for i, unit in enumerate(found)}
    assert_muting_computes_the_thinner_model(model, channels.plan(model, 0.0, ratios, found))


def test_reference_thinned_by_half_has_the_parameters_counted_by_hand():
    folded = models.build("squeezenet")  # no batch norm: kernels and biases only
    plan = channels.plan(folded, 0.5)
    thin = channels.thin(folded, plan)
    conv, s2, e2, s4, e4 = 32, 8, 32, 16, 64  # half of 64, 16, 64, 32, 128 (rounded)

    def conv_params(k, cin, cout):
        return k * k * cin * cout + cout

    by_hand = (conv_params(3, 3, conv)
               + conv_params(1, conv, s2) + conv_params(1, s2, e2) + conv_params(3, s2, e2)
               + conv_params(1, 2 * e2, s2) + conv_params(1, s2, e2) + conv_params(3, s2, e2)
               + conv_params(1, 2 * e2, s4) + conv_params(1, s4, e4) + conv_params(3, s4, e4)
               + conv_params(1, 2 * e4, s4) + conv_params(1, s4, e4) + conv_params(3, s4, e4)
               + conv_params(1, 2 * e4, 10))
    assert thin.count_params() == by_hand
    assert thin.get_layer("conv10").filters == 10  # one output per class
    assert plan.filters(folded)["fire4/expand3x3"] == {"before": 128, "kept": 64}


def test_a_bypass_prunes_the_added_layers_as_one_group():
    model = trained_like("squeezenet_bypass")
    plan = channels.plan(model, 0.4)
    for branch in ("expand1x1", "expand3x3"):
        assert plan.kept[f"fire2/{branch}"] == plan.kept[f"fire3/{branch}"]
        assert plan.kept[f"fire4/{branch}"] == plan.kept[f"fire5/{branch}"]
    thin = channels.thin(model, plan)
    assert thin.get_layer("bypass3").output_shape[-1] == 2 * len(plan.kept["fire2/expand1x1"])


def test_the_strongest_filters_are_kept():
    model = models.build("squeezenet")
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[..., :] = 0.01
    kernel[..., [5, 9]] = 1.0
    model.get_layer("conv").set_weights([kernel, bias])
    kept = channels.plan(model, 0.97).kept["conv"]
    assert kept == [5, 9]  # 64 * 0.03 rounds to 2


def test_a_layer_channel_pruning_cannot_follow_is_one_line():
    layers = keras().layers
    inputs = layers.Input((32, 32, 3))
    x = layers.Conv2D(8, 3)(inputs)
    x = layers.LSTM(4)(layers.Reshape((30, 240))(x))
    model = keras().Model(inputs, layers.Dense(3, activation="softmax")(x))
    with pytest.raises(EdgefireError, match="cannot follow layer 'reshape'"):
        channels.plan(model, 0.5)


def test_a_model_with_no_prunable_convolution_is_one_line_and_writes_nothing(image_folder,
                                                                            tmp_path):
    layers = keras().layers
    inputs = layers.Input((32, 32, 3))
    x = layers.GlobalAveragePooling2D()(layers.AveragePooling2D()(inputs))
    keras().Model(inputs, layers.Dense(10, activation="softmax")(x)).save(tmp_path / "m.h5")
    out = tmp_path / "out"
    run = CliRunner().invoke
    trained = run(app, ["train", "--model", str(tmp_path / "m.h5"), "--epochs", "0",
                        "--data", str(image_folder), "--artifacts", str(out)])
    assert trained.exit_code == 0, trained.output
    result = run(app, ["prune", "--prune", "channels", "--channel-sparsity", "0.2",
                       "--artifacts", str(out)])
    assert result.exit_code == 2, result.output
    assert "no convolution whose filters can be removed" in result.output
    assert not (out / "pruned.h5").exists()


def test_a_users_residual_model_prunes_its_block_and_shortcut_together():
    layers = keras().layers
    inputs = layers.Input((32, 32, 3))
    x = layers.Rescaling(1 / 255.0)(inputs)
    stem = layers.ReLU()(layers.BatchNormalization(name="stem_bn")(
        layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(x)))
    y = layers.ReLU()(layers.Conv2D(16, 3, padding="same", name="block_a")(stem))
    y = layers.Conv2D(16, 3, padding="same", name="block_b")(y)
    x = layers.Add(name="residual")([stem, y])
    x = layers.GlobalAveragePooling2D()(layers.ReLU()(x))
    model = keras().Model(inputs, layers.Dense(5, activation="softmax", name="head")(x))
    same = channels.thin(model, channels.plan(model, 0.0))
    np.testing.assert_allclose(same.predict(IMAGES, verbose=0),
                               model.predict(IMAGES, verbose=0), atol=1e-6)
    plan = channels.plan(model, 0.5)
    assert plan.kept["stem"] == plan.kept["block_b"] and len(plan.kept["block_a"]) == 8
    thin = channels.thin(model, plan)
    assert thin.get_layer("head").input_shape == (None, 8) and thin.output_shape == (None, 5)
    assert thin.count_params() < model.count_params() / 2
    assert_muting_computes_the_thinner_model(model, plan)  # the dense head's inputs too


def test_distillation_adds_only_the_divergence_from_the_teachers_scores():
    from edgefire.stages.fitting import Distillation

    student = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], "float32")
    hard = np.array([0.5, 0.3], "float32")
    distill = Distillation(weight=0.9, temperature=4.0)
    same = distill.loss(hard, student, student).numpy()
    np.testing.assert_allclose(same, 0.1 * hard, rtol=1e-6)
    teacher = np.array([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8]], "float32")
    differs = distill.loss(hard, teacher, student).numpy()
    assert differs[0] > same[0] + 0.1 and differs[1] == pytest.approx(same[1], rel=1e-6)
    soft = lambda p: np.exp(np.log(p) / 4) / np.exp(np.log(p) / 4).sum()  # noqa: E731
    kl = np.sum(soft(teacher[0]) * np.log(soft(teacher[0]) / soft(student[0])))
    assert differs[0] == pytest.approx(0.9 * 16 * kl + 0.1 * hard[0], rel=1e-4)


def test_sensitivity_takes_parameters_where_accuracy_suffers_least():
    robust, fragile = frozenset({"robust"}), frozenset({"fragile"})
    # both give 100 of 2000 parameters a level; only the fragile one loses accuracy doing so
    steps = {
        robust: [Step(level, 0.9, int(level * 800)) for level in (0, *sensitivity.LEVELS)],
        fragile: [Step(level, 0.9 - level, int(level * 800)) for level in
                  (0, *sensitivity.LEVELS)]}
    table = sensitivity.Sensitivity(steps, parameters=2000)

    def removed(ratios):  # units that share no kernel: their removals add up
        return sum(int(level * 800) for level in ratios.values())

    assert table.ratios(0.15, removed) == {robust: 0.375, fragile: 0.0}  # robust alone
    # 275 parameters: robust's third step taken three quarters of the way
    assert table.ratios(0.1375, removed) == {robust: 0.34375, fragile: 0.0}
    assert table.ratios(0.35, removed) == {robust: 0.75, fragile: 0.125}  # robust gave 600
    assert table.ratios(0.0, removed) == {robust: 0.0, fragile: 0.0}
    assert table.ratios(0.99, removed) == {robust: 0.75, fragile: 0.75}  # all LEVELS allow


@pytest.mark.slow
def test_a_byte_budget_allocated_by_sensitivity_lands_under_it_and_is_verifys_gate(
        trained_folder, copy_of, image_folder):
    """Through the stage commands, then `build` with the same flags finds every stage up to
    date: the budget is the gate either way."""
    folder = copy_of(trained_folder)
    run = CliRunner().invoke
    budget = ["--prune", "channels", "--target-bytes", "60000", "--channel-allocation",
              "sensitivity", "--distill"]
    for command in ([*"prune --epochs 1".split(), *budget],
                    ["quantize", "--no-fallback", "--max-drop", "100"], ["export"],
                    ["verify", "--micro-images", "50", "--max-drop", "100"]):
        result = run(app, [*command, "--artifacts", str(folder)])
        assert result.exit_code == 0, result.output
    result = run(app, [*BUILD, *budget, "--data", str(image_folder), "--micro-images", "50",
                       "--no-fallback", "--max-drop", "100", "--artifacts", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.output.count(": up to date") == 5, result.output
    assert (folder / "squeezenet_int8.tflite").stat().st_size <= 60_000
    result = run(app, [*BUILD, *budget, "--data", str(image_folder), "--io", "int8",
                       "--dry-run", "--artifacts", str(folder)])
    assert '> prune: would run (changed: io unset -> "int8")' in result.output, result.output
    report = json.loads((folder / "report.json").read_text())
    assert report["target_bytes"] == 60_000 and report["passed"]
    assert {g["limit"] for g in report["gates"] if g["metric"] == "bytes"} == {60_000}
    pruned = json.loads((folder / "prune.json").read_text())
    table = pruned["channels"]
    assert table["allocation"] == "sensitivity" and len(table["sensitivity"]["units"]) == 13
    for unit in table["sensitivity"]["units"]:  # each unit thinned alone at every level
        assert len(unit["accuracy"]) == 1 + len(sensitivity.LEVELS)
        removed = unit["parameters_removed"]
        assert removed == sorted(removed) and removed[0] == 0 < removed[-1]
    kept = {name: f["kept"] / f["before"] for name, f in table["filters"].items()}
    assert len(set(kept.values())) > 1  # not one fraction everywhere
    assert pruned["config"]["distill"] and pruned["config"]["distill_temperature"] == 4.0
    assert pruned["parameters"]["after"] < pruned["parameters"]["before"]
    assert pruned["multiply_accumulates"]["after"] < pruned["multiply_accumulates"]["before"]
    int8 = next(r for r in report["artifacts"] if r["name"] == "squeezenet_int8.tflite")
    ran = {name for name, cell in int8["runtimes"].items() if cell.get("error") is None
           and "skipped" not in cell}
    assert {"litert"} <= ran
    result = run(app, ["verify", "--micro-images", "50", "--max-drop", "100", "--max-bytes",
                       "500000", "--artifacts", str(folder)])  # a gate given wins
    assert result.exit_code == 0, result.output
    assert json.loads((folder / "report.json").read_text())["target_bytes"] == 500_000


def test_the_byte_search_measures_the_int8_file_with_the_builds_io_type():
    from edgefire.contract import InputContract
    from edgefire.stages.prune import int8_bytes

    model, pixels = trained_like("squeezenet"), (IMAGES * 255).astype(np.uint8)
    sizes = {io: int8_bytes(model, pixels, InputContract(), "squeezenet", list("abcdefghij"), io)
             for io in ("uint8", "int8")}
    assert sizes["int8"] < sizes["uint8"]  # no QUANTIZE ops at the input and output


def test_a_grouped_convolution_keeps_its_filters_its_input_and_what_an_addition_ties_to_it():
    from edgefire.tfenv import keras

    layers = keras().layers
    image = layers.Input((8, 8, 3))
    first = layers.Conv2D(6, 3, padding="same", name="first")(image)
    feeding = layers.Conv2D(8, 1, name="feeding")(first)
    grouped = layers.Conv2D(8, 3, padding="same", groups=2, name="grouped")(feeding)
    tied = layers.Conv2D(8, 1, name="tied")(first)
    gated = layers.Multiply(name="gated")([layers.Add()([grouped, tied]),
                                           layers.Activation("sigmoid")(tied)])
    head = layers.Dense(3, name="head")(layers.GlobalAveragePooling2D()(gated))
    model = keras().Model(image, head)
    assert [sorted(u.members) for u in channels.units(model)] == [["first"]]
    thinner = channels.thin(model, channels.plan(model, 0.5))
    assert thinner.get_layer("first").filters == 3 and thinner.get_layer("grouped").filters == 8
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    assert thinner(x).shape == (2, 3)


def exact_boundary(size, target: int) -> float:
    low, high = 0.0, 0.95
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (low, middle) if size(middle) <= target else (middle, high)
    return high


@pytest.mark.parametrize("size, most", [
    (lambda r: 3_000 + 4 * int(100_000 * (1 - r) ** 2), 4),  # on a line in the parameters
    (lambda r: 3_000 + 4 * int(100_000 * (1 - r) ** 2) + 16 * int(r * 40) ** 2,
     budget.MAX_MEASUREMENTS)], ids=["linear", "bent"])
def test_the_byte_search_finds_the_least_removal_that_fits_within_its_tolerance(size, most):
    search = budget.Search(size, lambda r: int(100_000 * (1 - r) ** 2), 150_000)
    found = search.least_ratio(0.95)
    assert size(found) <= 150_000
    assert found - exact_boundary(size, 150_000) < budget.TOLERANCE
    assert len(search.measured) <= most, search.measured


def test_the_byte_search_removes_nothing_when_the_whole_model_fits_and_says_when_none_does():
    assert budget.Search(lambda r: 500, lambda r: 1000, 600).least_ratio(0.95) == 0.0
    with pytest.raises(EdgefireError, match="even with 95% removed the int8 TFLite is larger"):
        budget.Search(lambda r: 700, lambda r: 1000, 600).least_ratio(0.95)
