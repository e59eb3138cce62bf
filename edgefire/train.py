"""`edgefire train`: the default recipe, with per-epoch checkpoints so a killed run resumes.

Recipe: batch norm after every convolution (folded away before saving), random crop (pad
N/8) and horizontal flip in the tf.data graph, Nesterov SGD (or Adam) with linear warm-up
then cosine decay, label smoothing and L2 weight decay (the fitting itself: `fitting.py`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from edgefire import artifacts, data, distribute, fitting, layout, models
from edgefire.config import TrainConfig, as_dict
from edgefire.tfenv import seed_everything

MODEL = layout.TRAINED


def train_model(config: TrainConfig, splits: data.Splits, folder: Path,
                placement: distribute.Placement | None = None):
    """Train on the training split with the recipe of `config`; resume from a checkpoint.

    Returns the deployable (batch-norm-folded) model and what the fit did (`fitting.Fit`).
    """
    seed_everything(config.seed)
    placement = placement or distribute.place("none")
    steps = math.ceil(len(splits.y_train) / config.batch_size)
    total = config.epochs * steps
    warmup = min(max(config.warmup_epochs * steps, config.warmup_min_steps),
                 total // 5)  # short runs still reach the peak
    with placement.strategy.scope():
        model = build_training_model(config, splits)

    def compile_at(scale: float) -> None:
        schedule = fitting.warmup_cosine_schedule()(config.learning_rate * scale, warmup, total)
        fitting.compile_model(model, schedule, config.label_smoothing, config.optimizer)

    fit = fitting.fit_epochs(model, splits, folder, "train", as_dict(config), config.contract,
                             compile_at, augmented=config.augment, placement=placement)
    return _deployable(model, config), fit


def build_training_model(config: TrainConfig, splits: data.Splits):
    """The model the recipe trains: the architecture (with batch norm if set) plus L2 decay."""
    from edgefire import models

    model = models.build(config.arch, config.contract.shape, len(splits.classes),
                         batch_norm=config.batch_norm, dropout=config.dropout)
    fitting.add_weight_decay(model, config.weight_decay)
    return model


def _deployable(model, config: TrainConfig):
    from edgefire import models

    if config.batch_norm:
        return models.fold_batch_norm(model, config.arch)
    deploy = models.build(config.arch, model.input_shape[1:], model.output_shape[-1])
    deploy.set_weights(model.get_weights())
    return deploy


def plot_history(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = range(1, len(history.get("loss", [])) + 1)
    for key, ax in (("loss", ax_loss), ("accuracy", ax_acc)):
        ax.plot(epochs, history.get(key, []), label=f"train {key}")
        ax.plot(epochs, history.get(f"val_{key}", []), label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    with artifacts.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def inputs(folder: Path) -> list[Path]:
    """Train reads no artifact: only its data source (see `stage_config`)."""
    return []


def stage_config(config: TrainConfig) -> dict:
    """What the manifest compares a train stage by: its config and its data's fingerprint, so
    a changed dataset (a class or an image added, a file replaced) trains again."""
    return {**as_dict(config), "data_fingerprint": data.source_fingerprint(config.data)}


def run(config: TrainConfig, folder: Path, where: str = "auto") -> dict:
    """Train where `where` says (`distribute.MODES`), then write the model, history, curves
    and metadata into the artifacts folder (a temporary one on a non-chief worker)."""
    placement = distribute.place(where)  # first: a multi-worker strategy must come first
    placement.check_batch(config.batch_size)
    with placement.output_folder(folder) as out:
        return _run(config, out, placement)


def _run(config: TrainConfig, folder: Path, placement: distribute.Placement) -> dict:
    data.check_apart(config.data, folder)
    artifacts.ensure_folder(folder)
    dataset = data.load(config.data, config.image_size)
    recorded = stage_config(config)  # the data as loaded; a later change trains again
    splits = data.split(dataset, config.val_size, config.seed, config.limit)
    fingerprint, classes = dataset.fingerprint, list(dataset.classes)
    del dataset  # the splits hold what training needs: keep one copy of the images, not two
    placed = placement.describe(config.batch_size)
    print(f"  training on {placed['strategy']}: {placed['replicas']} replica(s) "
          f"({', '.join(placed['devices'])}) in {placed['workers']} worker(s), "
          f"{placed['replica_batch']} images per replica of each {config.batch_size}-image "
          "step", flush=True)
    start = time.perf_counter()
    model, fit = train_model(config, splits, folder, placement)
    history, epochs_run = fit.history, fit.epochs_run
    wall = time.perf_counter() - start
    val_accuracy = fitting.accuracy(model, splits.x_val, splits.y_val, config.contract)
    meta = {
        "stage": "train", "config": as_dict(config), "seed": config.seed,
        "data": {"source": config.data, "fingerprint": fingerprint,
                 "train_images": int(len(splits.y_train)),
                 "val_images": int(len(splits.y_val)),
                 "test_images": int(len(splits.y_test))},
        "classes": classes, "input_shape": list(config.contract.shape),
        "input": config.contract.to_json(), "class_counts": data.class_counts(splits),
        "epochs": config.epochs, "epochs_run": epochs_run, "wall_seconds": round(wall, 1),
        "images_per_second": round(len(splits.y_train) * epochs_run / wall, 1),
        "val_accuracy": val_accuracy, "parameters": int(model.count_params()),
        "recoveries": fit.recoveries,
        "distribute": {**placement.describe(config.batch_size),
                       "steps_per_epoch": math.ceil(len(splits.y_train) / config.batch_size)},
        "history": history}
    with artifacts.output_set():
        models.save_model(model, folder / MODEL)
        artifacts.write_json(folder / layout.HISTORY, history)
        plot_history(history, folder / layout.TRAINING_CURVES)
        artifacts.write_json(folder / layout.record("train"), meta)
    outputs = [folder / n for n in (MODEL, layout.HISTORY, layout.TRAINING_CURVES,
                                    layout.record("train"))]
    artifacts.record_stage(folder, "train", outputs, [], recorded)
    fitting.remove_checkpoint(folder, "train")
    return meta
