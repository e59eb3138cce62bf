"""Keras fitting shared by the stages that train (train, prune, QAT): the tf.data pipeline,
optimizers and schedules, per-epoch checkpoints that resume a killed run, progress lines.

Each epoch's shuffle and augmentation are seeded by (seed, epoch), so a resumed run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgefire import artifacts, data
from edgefire.config import PruneConfig, QuantizeConfig, TrainConfig, where_set
from edgefire.contract import InputContract
from edgefire.errors import EdgefireError
from edgefire.tfenv import keras, tensorflow


def augment(images, seed, size: int):
    """Random crop with size/8 pixels of zero padding (4 at 32x32) and horizontal flip, one
    draw per image."""
    tf = tensorflow()
    pad = max(1, size // 8)
    n = tf.shape(images)[0]
    flip = tf.random.stateless_uniform([n, 1, 1, 1], seed) < 0.5
    images = tf.where(flip, tf.reverse(images, axis=[2]), images)
    offsets = tf.random.stateless_uniform([n, 2], seed + 1, 0, 2 * pad + 1, dtype=tf.int32)
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    span = size + 2 * pad - 1
    offsets = tf.cast(offsets, tf.float32) / span
    boxes = tf.concat([offsets, offsets + (size - 1) / span], axis=1)
    return tf.image.crop_and_resize(padded, boxes, tf.range(n), [size, size], method="nearest")


def cutout(images, seed, side: int):
    """Cutout (DeVries and Taylor 2017): a side x side square of each image set to zero (the
    model's input: black at pixel / 255), its centre drawn anywhere in the image (so near a
    border the square is partly outside), one draw per image."""
    tf = tensorflow()
    n, size = tf.shape(images)[0], tf.shape(images)[1]
    corners = tf.random.stateless_uniform([n, 2], seed, 0, size, dtype=tf.int32) - side // 2
    pixels = tf.range(size)

    def inside(corner):  # [n, size]: which rows (or columns) the square covers
        return (pixels[None, :] >= corner[:, None]) & (pixels[None, :] < corner[:, None] + side)

    square = inside(corners[:, 0])[:, :, None] & inside(corners[:, 1])[:, None, :]
    return tf.where(square[:, :, :, None], tf.zeros_like(images), images)


def mixup(images, labels, seed, alpha: float):
    """Mixup (Zhang et al. 2018): each image and its one-hot label blended with the batch's
    mirror image (the batch is already in random order) at a weight drawn from Beta(alpha,
    alpha), one draw per image."""
    tf = tensorflow()
    n = tf.shape(images)[0]
    draws = [tf.random.stateless_gamma([n], seed + k, alpha) for k in (0, 1)]
    weight = draws[0] / tf.maximum(draws[0] + draws[1], 1e-12)
    images = (weight[:, None, None, None] * images
              + (1 - weight[:, None, None, None]) * tf.reverse(images, axis=[0]))
    labels = weight[:, None] * labels + (1 - weight[:, None]) * tf.reverse(labels, axis=[0])
    return images, labels


def training_dataset(x, y, batch_size: int, seed: int, first_epoch: int, augmented: bool,
                     contract: InputContract, teacher=None, mix: float = 0.0,
                     classes: int | None = None, cut: int = 0):
    """Endless batches, epoch after epoch from `first_epoch`: each a (seed, epoch) permutation,
    augmented in the graph (with `cut`, cutout's square side), prefetched. Targets are
    labels; with `mix` (mixup's alpha) the images are blended and each target is the label
    weights, one per class of the model (`classes`; default: the labels' own). With a
    `teacher` model the target is followed by the teacher's scores for the same augmented
    image (see `compile_model`).

    One dataset and one `fit` for the whole run: a dataset and a `fit` per epoch stalled
    about 23 s before each epoch on CIFAR-10 here (a third of the training time).
    """
    tf = tensorflow()
    images, labels, n = tf.constant(x), tf.constant(y), len(y)
    classes = classes or int(np.max(y)) + 1

    def epoch_batches(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n), tf.stack([tf.constant(seed, tf.int64), epoch]))
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size).enumerate()

        def load(i, index):
            batch = contract.normalize_tf(tf.gather(images, index))
            if augmented:
                batch = augment(batch, tf.stack([tf.constant(seed * 100_003, tf.int64) + epoch,
                                                 i * 2]), contract.size)
            if cut:
                batch = cutout(batch, tf.stack([tf.constant(seed * 100_043, tf.int64) + epoch,
                                                i]), cut)
            target = tf.gather(labels, index)
            if mix:
                batch, target = mixup(batch, tf.one_hot(target, classes), tf.stack(
                    [tf.constant(seed * 100_019, tf.int64) + epoch, i * 2]), mix)
            if teacher is not None:
                first = target if mix else tf.cast(target[:, None], tf.float32)
                target = tf.concat([first, teacher(batch, training=False)], axis=1)
            return batch, target

        return batches.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    epochs = tf.data.Dataset.range(first_epoch, 2**62)
    return shard_by_data(epochs.flat_map(epoch_batches).prefetch(tf.data.AUTOTUNE))


def shard_by_data(dataset):
    """Several workers each build the same batches and take their share of each (a dataset
    of tensors has no files to shard by)."""
    tf = tensorflow()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = \
        tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def eval_dataset(x, y, contract: InputContract, batch_size: int = 500):
    tf = tensorflow()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    return shard_by_data(ds.map(lambda xb, yb: (contract.normalize_tf(xb), yb))
                         .prefetch(tf.data.AUTOTUNE))


def warmup_cosine_schedule():
    """A LearningRateSchedule class: linear warm-up to the peak, then cosine decay to zero.

    Keras's `CosineDecay(0, total - warm-up, warmup_target=peak, warmup_steps=...)` is the
    same schedule after the warm-up, but its warm-up starts at 0 (a first step that learns
    nothing) and stays one step behind; this one starts at peak / warm-up steps.
    """
    tf = tensorflow()

    class WarmupCosine(keras().optimizers.schedules.LearningRateSchedule):
        def __init__(self, peak, warmup_steps, total_steps):
            self.peak, self.warmup_steps, self.total_steps = peak, warmup_steps, total_steps

        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            warm = self.peak * (step + 1) / max(self.warmup_steps, 1)
            progress = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
            cosine = 0.5 * self.peak * (1 + tf.cos(math.pi * tf.minimum(progress, 1.0)))
            return tf.where(step < self.warmup_steps, warm, cosine)

        def get_config(self):
            return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                    "total_steps": self.total_steps}

    return WarmupCosine


def make_optimizer(name: str, learning_rate):
    """Nesterov SGD (momentum 0.9) or Adam at `learning_rate` (a float or a schedule)."""
    optimizers = keras().optimizers
    if name == "sgd":
        return optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    if name == "adam":
        return optimizers.Adam(learning_rate)
    raise EdgefireError(f"unknown --optimizer {name!r} (choose from sgd, adam)")


def compile_model(model, learning_rate, label_smoothing: float, optimizer: str = "adam",
                  distill: Distillation | None = None):
    """Compile for sparse labels; smoothing needs one-hot targets, so the loss encodes them.

    Training targets may be label weights (mixup) and may carry a teacher's scores after
    them (see `training_dataset`; validation's are labels alone); with `distill` the loss
    mixes in their KL divergence. Adam is the default for fine-tuning (pruning, QAT) at small
    rates; training passes its own.
    """
    tf = tensorflow()
    classes = model.output_shape[-1]
    # per-image losses: Keras averages them over the global batch under any strategy
    cross_entropy = keras().losses.CategoricalCrossentropy(
        label_smoothing=label_smoothing, reduction=keras().losses.Reduction.NONE)

    def targets(y_true):
        """(one weight per class, the teacher's scores or None) of a batch's targets: labels,
        or mixup's label weights, either followed by a teacher's scores."""
        width = y_true.shape[-1] if y_true.shape.rank == 2 else 1
        scores = y_true[:, -classes:] if width in (classes + 1, 2 * classes) else None
        labels = y_true[:, :width - classes] if scores is not None else y_true
        if labels.shape.rank == 2 and labels.shape[-1] == classes:
            return labels, scores
        return tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), classes), scores

    def loss(y_true, y_pred):
        labels, scores = targets(y_true)
        hard = cross_entropy(labels, y_pred)
        return hard if scores is None or distill is None else distill.loss(hard, scores, y_pred)

    def accuracy(y_true, y_pred):  # of a mixed image: its larger part's class
        return keras().metrics.categorical_accuracy(targets(y_true)[0], y_pred)

    model.compile(optimizer=make_optimizer(optimizer, learning_rate), loss=loss,
                  metrics=[keras().metrics.MeanMetricWrapper(accuracy, name="accuracy")])


@dataclass(frozen=True)
class Distillation:
    """Knowledge distillation (Hinton et al. 2015): the loss is `weight` x T^2 x the KL
    divergence between the teacher's and the student's scores softened at temperature T, plus
    (1 - `weight`) x the cross-entropy with the labels. Models here end in a softmax, so their
    log-probabilities serve as logits."""

    weight: float
    temperature: float

    def loss(self, hard, teacher, student):
        tf = tensorflow()
        t = self.temperature

        def soft_log(probabilities):
            return tf.nn.log_softmax(tf.math.log(tf.maximum(probabilities, 1e-7)) / t)

        target = soft_log(teacher)
        kl = tf.reduce_sum(tf.exp(target) * (target - soft_log(student)), axis=-1)
        return self.weight * t * t * kl + (1 - self.weight) * hard


def add_weight_decay(model, weight_decay: float) -> None:
    """L2 on every convolution kernel."""
    if weight_decay <= 0:
        return
    regularizer = keras().regularizers.L2(weight_decay)
    for layer in model.layers:
        if isinstance(layer, keras().layers.Conv2D):
            model.add_loss(lambda kernel=layer.kernel: regularizer(kernel))


# A run whose loss diverges restarts from its last checkpoint at half the learning rate, this
# many times (down to an eighth); then the stage stops with advice naming a real option.
MAX_RESTARTS = 3
# where the learning rate of each stage that fits is set, on each command and in a config file
LEARNING_RATE_OPTION = {
    "train": where_set(TrainConfig, "learning_rate", "train"),
    "prune": where_set(PruneConfig, "learning_rate", "prune"),
    "qat": where_set(QuantizeConfig, "qat_learning_rate", "quantize"),
    "head": where_set(TrainConfig, "learning_rate", "train"),
}


@dataclass
class Fit:
    """What a fit did: the history of every epoch, the epochs run by this call (fewer after a
    resume) and the restarts after a divergence."""

    history: dict
    epochs_run: int
    recoveries: list[dict] = field(default_factory=list)
    learning_rate_scale: float = 1.0


class Diverged(Exception):
    """The loss became non-finite or rose far above its start (see `divergence_limit`)."""

    def __init__(self, epoch: int, step: int, loss: float):
        super().__init__(f"epoch {epoch + 1}, step {step + 1}: loss {loss:.4g}")
        self.epoch, self.step, self.loss = epoch, step, loss


def divergence_limit(start: float, classes: int) -> float:
    """The loss a run may not pass: twice its first step's, and never the loss of a uniform
    guess (ln classes, less a tenth) once below it: a fine-tune that falls to chance has
    collapsed (the pruned digits model sat at 2.303 = ln 10 for 14 epochs)."""
    return max(2 * start, 0.9 * math.log(max(classes, 2)))


def restore_checkpoint(folder: Path, stage: str, config: dict, model):
    """Finished epochs, history and restarts of `<stage>_checkpoint` made with this exact
    config, if any, its weights loaded into `model`.

    One made with other settings is left, with a line naming them: the stage starts over (and
    overwrites it after its first epoch). A damaged checkpoint (a kill while the disk was full,
    a hand edit) is discarded with a warning and the model keeps its initial weights: the stage
    starts over.
    """
    weights, state_path = folder / f"{stage}_checkpoint.h5", folder / f"{stage}_checkpoint.json"
    if not (state_path.exists() and weights.exists()):
        return Fit({}, 0)
    initial = model.get_weights()
    try:
        state = json.loads(state_path.read_text())
        if state.get("config") != config:
            changed = ", ".join(artifacts.setting_changes(state.get("config") or {}, config))
            print(f"  {state_path.with_suffix('.*')}: made with other settings ({changed}); "
                  f"{stage} starts over", flush=True)
            return Fit({}, 0)
        done = Fit(dict(state["history"]), int(state["epochs_done"]),
                   list(state.get("recoveries", [])),
                   float(state.get("learning_rate_scale", 1.0)))
        model.load_weights(weights)
    except Exception as exc:  # json, h5py and Keras raise many types for a damaged file
        model.set_weights(initial)
        remove_checkpoint(folder, stage)
        print(f"  {state_path.with_suffix('.*')}: damaged checkpoint discarded "
              f"({type(exc).__name__}); {stage} starts over", flush=True)
        return Fit({}, 0)
    print(f"  resuming {stage} after epoch {done.epochs_run} from {weights}")
    return done


def save_checkpoint(folder: Path, stage: str, config: dict, model, done: Fit) -> None:
    """Weights, then the state that names them: finished epochs, history and restarts."""
    from edgefire.models import h5_bytes

    artifacts.ensure_space(folder / f"{stage}_checkpoint.h5", h5_bytes(model))
    with artifacts.atomic_path(folder / f"{stage}_checkpoint.h5") as tmp:
        model.save_weights(tmp)
    artifacts.write_json(folder / f"{stage}_checkpoint.json",
                         {"config": config, "epochs_done": done.epochs_run,
                          "history": done.history, "recoveries": done.recoveries,
                          "learning_rate_scale": done.learning_rate_scale})


def fit_seconds(history: dict) -> float | None:
    """Every epoch's wall time summed, those of runs killed and resumed included (None for a
    history from before edgefire recorded them)."""
    seconds = history.get("epoch_seconds")
    return round(sum(seconds), 1) if seconds else None


def remove_checkpoint(folder: Path, stage: str) -> None:
    for suffix in (".h5", ".json"):
        (folder / f"{stage}_checkpoint{suffix}").unlink(missing_ok=True)


def fit_epochs(model, splits: data.Splits, folder: Path, stage: str, config: dict,
               contract: InputContract, compile_at: Callable[[float], None], callbacks=(),
               augmented: bool = True, placement=None, teacher=None) -> Fit:
    """Fit from the last checkpoint of `stage`, checkpointing each epoch; on a divergence,
    restart from the last checkpoint (or the start) at half the learning rate.

    `config` is the stage's resolved config (with epochs, batch_size and seed); a checkpoint
    made with another config is ignored. `compile_at(scale)` compiles `model` with its
    learning rate times `scale`. With several workers (`placement`) the chief's checkpoint is
    the one resumed: every worker starts from its weights and epoch. A `teacher` model adds
    its scores to the training targets (knowledge distillation, see `Distillation`).
    """
    initial = model.get_weights()
    done = _resume(placement, folder, stage, config, model)
    first_epoch = done.epochs_run
    while True:
        with placement.strategy.scope() if placement else contextlib.nullcontext():
            compile_at(done.learning_rate_scale)
        try:
            _fit(model, splits, folder, stage, config, contract, done, callbacks, augmented,
                 placement, teacher)
            return replace(done, epochs_run=done.epochs_run - first_epoch)
        except Diverged as diverged:
            if len(done.recoveries) >= MAX_RESTARTS:
                raise EdgefireError(
                    f"{stage} diverged {len(done.recoveries) + 1} times, the last in "
                    f"{diverged}, down to {done.learning_rate_scale:g} x its learning rate; "
                    "nothing was saved "
                    f"(lower it: {LEARNING_RATE_OPTION[stage]})") from None
            done = _restart(model, initial, folder, stage, config, done, diverged, placement)


def _resume(placement, folder: Path, stage: str, config: dict, model) -> Fit:
    if placement is not None and placement.workers > 1:
        return resume_from_chief(placement, folder, stage, config, model)
    return restore_checkpoint(folder, stage, config, model)


def _restart(model, initial, folder: Path, stage: str, config: dict, done: Fit,
             diverged: Diverged, placement) -> Fit:
    """Back to the last checkpoint (or the initial weights) at half the learning rate."""
    model.set_weights(initial)
    last = _resume(placement, folder, stage, config, model)
    scale = done.learning_rate_scale / 2
    record = {"epoch": diverged.epoch + 1, "step": diverged.step + 1,
              "loss": diverged.loss if math.isfinite(diverged.loss) else str(diverged.loss),
              "restarted_after_epoch": last.epochs_run, "learning_rate_scale": scale}
    print(f"  ! {stage} diverged ({diverged}): restarting after epoch {last.epochs_run} at "
          f"{scale:g} x the learning rate", flush=True)
    return replace(last, recoveries=[*done.recoveries, record], learning_rate_scale=scale)


def _fit(model, splits: data.Splits, folder: Path, stage: str, config: dict,
         contract: InputContract, done: Fit, callbacks, augmented: bool, placement,
         teacher=None) -> None:
    """One uninterrupted fit from `done.epochs_run` to the last epoch; `done` is updated and
    checkpointed after each epoch."""
    epochs, batch_size, seed = config["epochs"], config["batch_size"], config["seed"]
    steps = math.ceil(len(splits.y_train) / batch_size)
    if done.epochs_run >= epochs:
        return
    # The optimizer's moments are not in the weight checkpoint; the learning-rate schedule
    # continues exactly where it stopped, and the moments re-estimate within a few steps.
    model.optimizer.iterations.assign(done.epochs_run * steps)
    ds = training_dataset(splits.x_train, splits.y_train, batch_size, seed, done.epochs_run,
                          augmented, contract, teacher, config.get("mixup", 0.0),
                          model.output_shape[-1], config.get("cutout", 0))
    try:
        model.fit(ds, epochs=epochs, initial_epoch=done.epochs_run, steps_per_epoch=steps,
                  verbose=1 if sys.stdout.isatty() else 2,  # a live bar, or a line an epoch
                  validation_data=eval_dataset(splits.x_val, splits.y_val, contract),
                  callbacks=[stop_on_divergence(model.output_shape[-1]),
                             checkpoint_callback(folder, stage, config, model, done),
                             *callbacks, progress_callback()])
    except tensorflow().errors.OpError as exc:
        if placement is None or placement.workers == 1:
            raise
        raise EdgefireError(f"{lost_worker(str(exc))}; rerun every worker's command to resume "
                            "after the last finished epoch") from None


def progress_callback():
    """Keras's progress bar, last: an epoch's line is printed only once its checkpoint is
    saved, so an interrupt right after the line never loses that epoch."""
    return keras().callbacks.ProgbarLogger(count_mode="steps")


def lost_worker(error: str) -> str:
    """Which worker TensorFlow says stopped answering, from a collective's error."""
    match = re.search(r"unhealthy.*?(/job:\w+/replica:\d+/task:\d+)", error, re.DOTALL)
    return f"{match.group(1)} stopped answering" if match else "a worker stopped answering"


def resume_from_chief(placement, folder: Path, stage: str, config: dict, model):
    """Every worker takes the chief's checkpoint: its weights and finished epochs (only the
    chief keeps checkpoints: the others write nothing that outlives the run).

    The checkpoint is read into a plain copy of the model, outside the strategy, so that the
    one collective every worker runs here is the same on each.
    """
    plain = keras().models.clone_model(model)
    done = restore_checkpoint(folder, stage, config, plain)
    *weights, epochs = placement.from_chief([*plain.get_weights(),
                                             np.array([float(done.epochs_run)])])
    model.set_weights(weights)
    return replace(done, epochs_run=int(epochs[0]))


def stop_on_divergence(classes: int):
    """Stop at the first non-finite loss, or one past `divergence_limit`, before a broken
    model is checkpointed or saved."""

    class StopOnDivergence(keras().callbacks.Callback):
        limit = None

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            loss = float(logs.get("loss", 0.0))
            if self.limit is None and math.isfinite(loss):
                self.limit = divergence_limit(loss, classes)
            if not math.isfinite(loss) or loss > self.limit:
                raise Diverged(self.epoch, batch, loss)

    return StopOnDivergence()


def checkpoint_callback(folder: Path, stage: str, config: dict, model, done: Fit):
    """After each epoch: append its logs and its wall time (`epoch_seconds`, validation
    included: what a resumed run cost in all is their sum) to `done`'s history, and checkpoint
    it."""

    class Checkpoint(keras().callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            for key, value in logs.items():
                done.history.setdefault(key, []).append(float(value))
            seconds = round(time.perf_counter() - self.began, 1)
            done.history.setdefault("epoch_seconds", []).append(seconds)
            done.epochs_run = epoch + 1
            save_checkpoint(folder, stage, config, model, done)

    return Checkpoint()


def accuracy(model, x, y, contract: InputContract) -> float:
    """Top-1 accuracy of a Keras model on uint8 images. The model is called batch by batch:
    `predict` traces a function for each new model, which costs more than scoring a validation
    split does (three times more on 80 images; sensitivity analysis scores 78 models)."""
    hits = 0
    for images, labels in eval_dataset(x, y, contract):
        scores = model(images, training=False)
        hits += int(np.sum(np.argmax(scores, axis=1) == labels.numpy()))
    return hits / len(x)
