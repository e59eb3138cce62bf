"""`edgefire prune`: magnitude pruning with a polynomial-decay schedule and fine-tuning."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgefire import artifacts, data, layout, models, records
from edgefire.config import PruneConfig, as_dict
from edgefire.contract import InputContract
from edgefire.errors import EdgefireError
from edgefire.models import budget, channels, flip_average, sensitivity
from edgefire.registry import DEFAULT, Context
from edgefire.stages import distribute, fitting
from edgefire.tfenv import keras, seed_everything

MODEL = layout.PRUNED
UNFOLD_IMAGES = 2000  # training images that set the re-inserted batch norm's statistics


def pruning_schedule(config: PruneConfig, steps_per_epoch: int):
    """Polynomial decay from 0 to the target, reached on a mask update at ~2/3 of the run.

    tfmot only updates masks every `frequency` steps, so the end step is put on one of those
    updates; otherwise a short fine-tune would end below the target, or with no zeros at all.
    """
    import tensorflow_model_optimization as tfmot

    total = config.epochs * steps_per_epoch
    end = max(1, 2 * total // 3)
    frequency = max(1, min(config.frequency, end // config.min_mask_updates))
    end = max(frequency, end // frequency * frequency)
    return tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0,
                                                final_sparsity=config.sparsity, begin_step=0,
                                                end_step=end, frequency=frequency)


def wrap_for_pruning(model, config: PruneConfig, steps_per_epoch: int):
    """Wrap every convolution except `keep_dense` with prune_low_magnitude."""
    import tensorflow_model_optimization as tfmot

    schedule = pruning_schedule(config, steps_per_epoch)

    def wrap(layer):
        if isinstance(layer, keras().layers.Conv2D) and layer.name not in config.keep_dense:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    return keras().models.clone_model(model, clone_function=wrap)


def pruned_layer_names(model, config: PruneConfig) -> list[str]:
    return [layer.name for layer in model.layers
            if isinstance(layer, keras().layers.Conv2D) and layer.name not in config.keep_dense]


def prune_model(model, config: PruneConfig, splits: data.Splits, folder: Path,
                trained: records.TrainRecord, placement: distribute.Placement | None = None,
                io: str = "uint8"):
    """Prune and fine-tune `model` with training's seed, label smoothing and dropout; a model
    trained with batch norm is fine-tuned with it re-inserted, then folded again.

    Returns the stripped (plain Keras) model, with the reference's dropout rate, and what the
    fit did (`fitting.Fit`). A byte budget is measured on int8 files with `io` input and output.
    """
    import tensorflow_model_optimization as tfmot

    from edgefire import models

    seed_everything(trained.seed)
    steps = math.ceil(len(splits.y_train) / config.batch_size)
    arch, given, contract = trained.arch, not trained.built_in, trained.contract
    unfold = trained.config["batch_norm"] and not given  # the user's keep their BN
    thinned = {}
    with placement.strategy.scope() if placement else contextlib.nullcontext():
        teacher = frozen_copy(model) if config.distill else None
        if unfold:
            sample = np.random.default_rng(trained.seed).permutation(
                len(splits.y_train))[:UNFOLD_IMAGES]  # the folder's order is by class
            model = models.unfold_batch_norm(model, arch,
                                             contract.normalize(splits.x_train[sample]))
        if not given:  # a given model keeps its own dropout rates
            models.set_dropout(model, trained.config["dropout"])
        if config.channels:
            model, thinned = thin_to_budget(model, config, splits, contract, arch, io)
        wrapped = wrap_for_pruning(model, config, steps) if config.magnitude else model

    def compile_at(scale: float) -> None:
        schedule = keras().optimizers.schedules.CosineDecay(config.learning_rate * scale,
                                                            config.epochs * steps)
        fitting.compile_model(wrapped, schedule, trained.config["label_smoothing"],
                              config.optimizer, distillation(config))

    stage_config = {**as_dict(config), "seed": trained.seed}
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep()] if config.magnitude else []
    fit = fitting.fit_epochs(wrapped, splits, folder, "prune", stage_config, contract,
                             compile_at, callbacks=callbacks, placement=placement,
                             teacher=teacher)
    pruned = tfmot.sparsity.keras.strip_pruning(wrapped) if config.magnitude else wrapped
    if unfold:
        pruned = channels.fold(pruned) if config.channels else models.fold_batch_norm(pruned,
                                                                                        arch)
    if not given:
        models.set_dropout(pruned, models.DROPOUT)
    return pruned, fit, thinned


def frozen_copy(model):
    """A copy of `model` that no fit changes: the teacher of a distilled fine-tune."""
    copy = keras().models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.trainable = False
    return copy


def distillation(config: PruneConfig) -> fitting.Distillation | None:
    return (fitting.Distillation(config.distill_weight, config.distill_temperature)
            if config.distill else None)


MAX_CHANNEL_SPARSITY = 0.95


def thin_to_budget(model, config: PruneConfig, splits: data.Splits, contract: InputContract,
                   arch: str, io: str):
    """The model with `--channel-sparsity` removed, or the least whose int8 TFLite (converted
    and measured, metadata included) is within `--target-bytes`. Returns the thinner model and
    the record of what was removed."""
    ratio = config.channel_sparsity
    planned, record = allocation(model, config, splits, contract)
    search = budget.Search(
        lambda r: int8_bytes(channels.thin(model, planned(r)),
                             splits.x_train[:CALIBRATION_IMAGES], contract, arch,
                             splits.classes, io),
        lambda r: channels.parameters(model, planned(r)), config.target_bytes)
    if config.target_bytes is not None:
        ratio = search.least_ratio(MAX_CHANNEL_SPARSITY)
    chosen = planned(ratio)
    thinner = channels.thin(model, chosen)
    return thinner, {"channel_sparsity": round(ratio, 4), "search": search.measured, **record,
                     "importance": "L1 norm of each filter's folded kernel (kernel x batch "
                                   "norm scale)",
                     "filters": chosen.filters(model)}


def allocation(model, config: PruneConfig, splits: data.Splits, contract: InputContract):
    """How a fraction becomes a plan: the same fraction of every unit's filters (uniform), or
    that fraction of the parameters, taken where the measured sensitivity is least."""
    if config.channel_allocation == "uniform":
        return (lambda ratio: channels.plan(model, ratio)), {"allocation": "uniform"}
    print("  measuring each layer's sensitivity to channel pruning", flush=True)
    measured = sensitivity.measure(model, splits.x_val, splits.y_val,
                                   lambda m, x, y: fitting.accuracy(m, x, y, contract))
    total, found = model.count_params(), channels.units(model)

    def removed(ratios: dict) -> int:
        return total - channels.parameters(model, channels.plan(model, 0.0, ratios, found))

    return (lambda ratio: channels.plan(model, ratio, measured.ratios(ratio, removed), found)), \
        {"allocation": "sensitivity", "sensitivity": measured.to_json()}


CALIBRATION_IMAGES = 64  # enough to convert: the file's bytes do not depend on the ranges


def int8_bytes(model, calibration: np.ndarray, contract: InputContract, arch: str,
               classes, io: str) -> int:
    """Bytes of the int8 TFLite (with its metadata) that quantize would write for `model`
    (batch norm folded first, as the file prune writes), made as quantize makes it."""
    from edgefire import metadata, tflite_converter

    tflite, _ = tflite_converter.smallest_encoding(channels.fold(model), "int8", io,
                                                   calibration, 0, contract)
    return len(metadata.attach(tflite, arch, list(classes), contract))


def recorded(config: PruneConfig, context: Context = DEFAULT) -> dict:
    """What the manifest compares prune by: its config, and with a byte budget the int8 file's
    I/O type it was measured with when not the default uint8 (another type makes another size;
    builds from before it was recorded measured with uint8)."""
    fields = as_dict(config)
    if config.target_bytes is not None and context.io != "uint8":
        fields["io"] = context.io
    return fields


def inputs(folder: Path, context: Context = DEFAULT) -> list[Path]:
    """What prune reads: the trained model (checked intact)."""
    return [artifacts.artifact_path(folder, layout.TRAINED, "prune")]


def dense_layers_of(config: PruneConfig, model) -> PruneConfig:
    """`config` with `keep_dense` checked against the model's layers. The defaults name the
    reference's first and last convolutions: for any other model they become its own."""
    names = [layer.name for layer in model.layers]
    if config.keep_dense == PruneConfig().keep_dense:
        convs = [layer.name for layer in model.layers
                 if isinstance(layer, keras().layers.Conv2D)]
        return replace(config, keep_dense=tuple(dict.fromkeys(convs[:1] + convs[-1:])))
    unknown = sorted(set(config.keep_dense) - set(names))
    if unknown:
        raise EdgefireError(f"--keep-dense names layers the model does not have: {unknown}")
    return config


def run(config: PruneConfig, folder: Path, context: Context = DEFAULT) -> dict:
    """Prune the trained model of the artifacts folder and record the measured sparsity.

    The fine-tune runs where the context says, on this machine (`auto`, `none`,
    `mirrored`), or with TensorFlow's default placement when None (a multi-worker build's
    chief).
    """
    began = time.perf_counter()
    where = context.distribute
    if where == "multi-worker":
        raise EdgefireError("prune runs on one machine: --distribute auto, none or mirrored "
                            "(a multi-worker build prunes on the chief)")
    placement = distribute.place(where) if where else None
    if placement:
        placement.check_batch(config.batch_size)
    trained_path, = inputs(folder)
    trained = records.train(folder)
    with placement.strategy.scope() if placement else contextlib.nullcontext():
        model = models.load_model(trained_path)  # its variables are the ones pruning wraps
    flip_average.refuse(model, trained_path, "pruned")
    contract = trained.contract
    asked = recorded(config, context)  # what the manifest records and a build compares
    config = dense_layers_of(config, model)
    _, splits = data.of_build(trained, context.data)
    models.check_input_shape(model, splits, trained_path)
    before = fitting.accuracy(model, splits.x_val, splits.y_val, contract)
    pruned, fit, thinned = prune_model(model, config, splits, folder, trained,
                                       placement, context.io)
    after = fitting.accuracy(pruned, splits.x_val, splits.y_val, contract)
    names = pruned_layer_names(pruned, config)
    result = {"stage": "prune", "config": as_dict(config), "target_sparsity": config.sparsity,
              "sparsity": models.kernel_sparsity(pruned, names),
              "model_sparsity": models.kernel_sparsity(pruned)["overall"],
              "val_accuracy_before": before, "val_accuracy_after": after, "history": fit.history,
              "recoveries": fit.recoveries, "method": config.method,
              "parameters": {"before": int(model.count_params()),
                             "after": int(pruned.count_params())},
              "multiply_accumulates": {"before": models.multiply_accumulates(model),
                                       "after": models.multiply_accumulates(pruned)},
              "channels": thinned or None,
              "distribute": placement.describe(config.batch_size) if placement else None,
              "wall_seconds": round(time.perf_counter() - began, 1),  # this run's
              "fit_seconds": fitting.fit_seconds(fit.history)}  # every run's epochs
    with artifacts.output_set():
        models.save_model(pruned, folder / MODEL)
        artifacts.write_json(folder / layout.record("prune"), result)
    artifacts.record_stage(folder, "prune", [folder / MODEL, folder / layout.record("prune")],
                           [trained_path], asked)
    fitting.remove_checkpoint(folder, "prune")
    return result


def summary(result: dict, folder: Path) -> str:
    """What `edgefire prune` prints when it is done."""
    params = result["parameters"]
    return (f"pruned ({result['method']}): {params['before']:,} -> {params['after']:,} "
            f"parameters, {result['sparsity']['overall']:.1%} zeros in the pruned layers: "
            f"validation accuracy {result['val_accuracy_before']:.4f} -> "
            f"{result['val_accuracy_after']:.4f} -> {folder / MODEL}")
