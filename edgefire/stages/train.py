"""`edgefire train`: the default recipe, with per-epoch checkpoints so a killed run resumes.

Recipe: batch norm after every convolution (folded away before saving), random crop (pad
N/8) and horizontal flip in the tf.data graph, Nesterov SGD (or Adam) with linear warm-up
then cosine decay, label smoothing and L2 weight decay (the fitting itself: `fitting.py`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from edgefire import artifacts, data, layout, models, report
from edgefire.config import TrainConfig, as_dict
from edgefire.models import flip_average
from edgefire.registry import DEFAULT, Context
from edgefire.stages import distribute, fitting, teacher
from edgefire.tfenv import keras, seed_everything

MODEL = layout.TRAINED
EQUALITY_IMAGES = 1000  # validation images an ONNX file and its conversion are compared on


def train_model(config: TrainConfig, splits: data.Splits, folder: Path,
                placement: distribute.Placement | None = None, given=None):
    """Train on the training split with the recipe of `config`; resume from a checkpoint.
    A given model (`given_model.Given`) is fine-tuned instead, or taken as it is at 0 epochs.

    Returns the deployable model (built-in: batch norm folded) and what the fit did.
    """
    seed_everything(config.seed)
    placement = placement or distribute.place("none")
    if given is not None and config.epochs == 0:
        return given.model, fitting.Fit({}, 0)
    steps = math.ceil(len(splits.y_train) / config.batch_size)
    total = config.epochs * steps
    warmup = min(max(config.warmup_epochs * steps, config.warmup_min_steps),
                 total // 5)  # short runs still reach the peak
    if given is None:
        with placement.strategy.scope():
            model = build_training_model(config, splits)
    else:
        model = given.model  # loaded in the strategy's scope; its own regularizers only

    distill = (fitting.Distillation(config.distill_weight, config.distill_temperature)
               if config.teacher else None)

    def compile_at(scale: float) -> None:
        schedule = fitting.warmup_cosine_schedule()(config.learning_rate * scale, warmup, total)
        fitting.compile_model(model, schedule, config.label_smoothing, config.optimizer,
                              distill)

    contract = given.contract if given else config.contract
    if given is not None and config.head_epochs and given.new_head:
        train_head_alone(model, config, splits, folder, contract, placement)
    distilling = None
    if config.teacher:
        with placement.strategy.scope():
            distilling = teacher.load(config.teacher, contract, splits.classes)
    fit = fitting.fit_epochs(model, splits, folder, "train", fit_settings(config), contract,
                             compile_at, augmented=config.augment, placement=placement,
                             teacher=distilling)
    return (model if given else _deployable(model, config)), fit


def train_head_alone(model, config: TrainConfig, splits: data.Splits, folder: Path,
                     contract, placement) -> None:
    """`head_epochs` of the new head alone, the body frozen (its batch norm in inference
    mode), at the peak rate with cosine decay; then every layer trains again."""
    body = [layer for layer in model.layers if not layer.name.endswith("_new")
            and layer.name != "scores" and layer.weights]
    for layer in body:
        layer.trainable = False
    steps = math.ceil(len(splits.y_train) / config.batch_size)

    def compile_at(scale: float) -> None:
        schedule = keras().optimizers.schedules.CosineDecay(config.learning_rate * scale,
                                                            config.head_epochs * steps)
        fitting.compile_model(model, schedule, config.label_smoothing, config.optimizer)

    head_config = {**fit_settings(config), "epochs": config.head_epochs}
    fitting.fit_epochs(model, splits, folder, "head", head_config, contract, compile_at,
                       augmented=config.augment, placement=placement)
    for layer in body:
        layer.trainable = True


def fit_settings(config: TrainConfig) -> dict:
    """The settings a checkpoint is made with; mixup and cutout unset are left out, as before
    they existed, so that a run started then still resumes. Flip averaging wraps the model
    after the fit, so a run with it and one without share their checkpoints."""
    settings = as_dict(config)
    del settings["flip_average"]
    for added in ("mixup", "cutout"):
        if not settings[added]:
            del settings[added]
    return settings


def build_training_model(config: TrainConfig, splits: data.Splits):
    """The model the recipe trains: the architecture (with batch norm if set) plus L2 decay;
    or what the user's `--arch FILE.py:FUNCTION` returns."""
    from edgefire import models

    if config.arch_file:
        model = models.from_function(config.arch_file, config.contract.shape,
                                     len(splits.classes))
    else:
        model = models.build(config.arch, config.contract.shape, len(splits.classes),
                             batch_norm=config.batch_norm, dropout=config.dropout)
    fitting.add_weight_decay(model, config.weight_decay)
    return model


def _deployable(model, config: TrainConfig):
    from edgefire import models

    if not config.built_in:  # the user's architecture: its batch norm folds at conversion
        return model
    if config.batch_norm:
        return models.fold_batch_norm(model, config.arch)
    deploy = models.build(config.arch, model.input_shape[1:], model.output_shape[-1])
    deploy.set_weights(model.get_weights())
    return deploy


def load_data(config: TrainConfig, placement: distribute.Placement):
    """The dataset at the model's input size, and the given model adapted to it (or None)."""
    from edgefire.models import given as given_model

    if config.model is None:
        return data.load(config.data, config.image_size), None
    with placement.strategy.scope():
        model, size, origin = given_model.open_model(config.model, config.image_size)
        dataset = data.load(config.data, size)
        given = given_model.adapt(model, config.model, size, len(dataset.classes),
                                  config.mean, config.std, config.epochs, config.seed,
                                  config.head_epochs, origin)
    print(f"  given model {config.model}: {given.notes['head']} head; input "
          f"{given.contract.size}x{given.contract.size}, {given.notes['contract']}",
          flush=True)
    return dataset, given


def plot_history(history: dict, path: Path) -> None:
    plt = report.pyplot()

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


def given_accuracy(given, splits: data.Splits) -> dict:
    """A given model's float top-1 on validation and test before any fine-tuning (its new
    head, if any, untrained): the number fine-tuning is to beat."""
    if given is None or given.new_head:
        return {}
    return {f"{split}_accuracy_given": fitting.accuracy(given.model, x, y, given.contract)
            for split, x, y in (("val", splits.x_val, splits.y_val),
                                ("test", splits.x_test, splits.y_test))}


def inputs(folder: Path, context: Context = DEFAULT) -> list[Path]:
    """Train reads no artifact: only its data source (see `recorded`)."""
    return []


def recorded(config: TrainConfig, context: Context = DEFAULT) -> dict:
    """What the manifest compares a train stage by: its config and its data's fingerprint, so
    a changed dataset (a class or an image added, a file replaced) trains again."""
    from edgefire.models import given as given_model

    fields = {**fit_settings(config), "data_fingerprint": data.source_fingerprint(config.data)}
    if config.flip_average:  # unset: recorded as before it existed
        fields["flip_average"] = True
    if config.data != "cifar10":  # the data is its fingerprint: a moved checkout is the same
        del fields["data"]
    if config.model:  # the file's bytes: a changed model trains (and everything after) again
        fields["model_sha256"] = given_model.fingerprint(config.model)
    if config.arch_file:
        fields["arch_sha256"] = given_model.fingerprint(config.arch_file.rpartition(":")[0])
    if config.teacher:  # its bytes, not its path: changed, it trains again; moved, it is the same
        fields["teacher_sha256"] = given_model.fingerprint(str(teacher.source(config.teacher)))
        del fields["teacher"]
    else:  # no teacher: recorded as before distillation existed, so those builds stay current
        for key in ("teacher", "distill_weight", "distill_temperature"):
            del fields[key]
    return fields


def check_inputs(config: TrainConfig, folder: Path) -> None:
    """What can be found wrong before TensorFlow loads or anything is written: the data and
    the model file are there, and the artifacts folder lies apart from the data."""
    from edgefire.models import given as given_model

    data.check_exists(config.data)
    if config.model:
        given_model.check_file(config.model)
    if config.teacher:
        teacher.source(config.teacher)
    data.check_apart(config.data, folder)


def run(config: TrainConfig, folder: Path, context: Context = DEFAULT) -> dict:
    """Train where the context says (`distribute.MODES`), then write the model, history,
    curves and metadata into the artifacts folder (a temporary one on a non-chief worker)."""
    check_inputs(config, folder)
    # before anything else: a multi-worker strategy must be the first TensorFlow state
    placement = distribute.place(context.distribute)
    placement.check_batch(config.batch_size)
    with placement.output_folder(folder) as out:
        return _run(config, out, placement)


def _run(config: TrainConfig, folder: Path, placement: distribute.Placement) -> dict:
    with artifacts.created_folder(folder):
        dataset, given = load_data(config, placement)
    contract = given.contract if given else config.contract
    asked = recorded(config)  # the data as loaded; a later change trains again
    splits = data.split(dataset, config.val_size, config.seed, config.limit)
    fingerprint, classes = dataset.fingerprint, list(dataset.classes)
    del dataset  # the splits hold what training needs: keep one copy of the images, not two
    placed = placement.describe(config.batch_size)
    print(f"  training on {placed['strategy']}: {placed['replicas']} replica(s) "
          f"({', '.join(placed['devices'])}) in {placed['workers']} worker(s), "
          f"{placed['replica_batch']} images per replica of each {config.batch_size}-image "
          "step", flush=True)
    if given is not None and given.notes["format"] == "onnx":  # before anything else
        from edgefire.models import given as given_model

        given_model.prove_equal(given, splits.x_val[:EQUALITY_IMAGES], config.mean, config.std)
    start = time.perf_counter()
    before = given_accuracy(given, splits)
    model, fit = train_model(config, splits, folder, placement, given)
    if config.flip_average:
        model = flip_average.averaged(model)
    history, epochs_run = fit.history, fit.epochs_run
    wall = time.perf_counter() - start
    val_accuracy = fitting.accuracy(model, splits.x_val, splits.y_val, contract)
    meta = {
        "stage": "train", "config": as_dict(config), "seed": config.seed,
        "data": {"source": config.data, "fingerprint": fingerprint,
                 "train_images": int(len(splits.y_train)),
                 "val_images": int(len(splits.y_val)),
                 "test_images": int(len(splits.y_test))},
        "classes": classes,
        "input": contract.to_json(), "class_counts": data.class_counts(splits),
        "epochs": config.epochs, "epochs_run": epochs_run, "wall_seconds": round(wall, 1),
        "fit_seconds": fitting.fit_seconds(history),  # every run's epochs: resumed ones too
        "images_per_second": round(len(splits.y_train) * epochs_run / max(wall, 1e-9), 1),
        "val_accuracy": val_accuracy, "parameters": int(model.count_params()),
        "multiply_accumulates": models.multiply_accumulates(model),
        "given_model": {**given.notes, **before} if given else None,
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
    artifacts.record_stage(folder, "train", outputs, [], asked)
    fitting.remove_checkpoint(folder, "train")
    fitting.remove_checkpoint(folder, "head")
    return meta


def summary(result: dict, folder: Path) -> str:
    """What `edgefire train` prints when it is done."""
    worker = result["distribute"]["task_index"]
    if worker:
        return (f"worker {worker}: trained with the chief in {result['wall_seconds']:.0f} s; "
                "the chief wrote the artifacts")
    return (f"trained {result['config']['arch']}: validation accuracy "
            f"{result['val_accuracy']:.4f}, {result['parameters']:,} parameters, "
            f"{result['wall_seconds']:.0f} s ({result['images_per_second']:.0f} images/s) -> "
            f"{folder / MODEL}")
