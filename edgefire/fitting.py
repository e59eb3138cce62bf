"""Keras fitting shared by the stages that train (train, prune, QAT): the tf.data pipeline,
optimizers and schedules, per-epoch checkpoints that resume a killed run, progress lines.

Each epoch's shuffle and augmentation are seeded by (seed, epoch), so a resumed run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np

from edgefire import artifacts, data
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


def training_dataset(x, y, batch_size: int, seed: int, first_epoch: int, augmented: bool,
                     contract: InputContract):
    """Endless batches, epoch after epoch from `first_epoch`: each a (seed, epoch) permutation,
    augmented in the graph, prefetched.

    One dataset and one `fit` for the whole run: a dataset and a `fit` per epoch stalled
    about 23 s before each epoch on CIFAR-10 here (a third of the training time).
    """
    tf = tensorflow()
    images, labels, n = tf.constant(x), tf.constant(y), len(y)

    def epoch_batches(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n), tf.stack([tf.constant(seed, tf.int64), epoch]))
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size).enumerate()

        def load(i, index):
            batch = contract.normalize_tf(tf.gather(images, index))
            if augmented:
                batch = augment(batch, tf.stack([tf.constant(seed * 100_003, tf.int64) + epoch,
                                                 i * 2]), contract.size)
            return batch, tf.gather(labels, index)

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
    """A LearningRateSchedule class: linear warm-up to the peak, then cosine decay to zero."""
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


def compile_model(model, learning_rate, label_smoothing: float, optimizer: str = "adam"):
    """Compile for sparse labels; smoothing needs one-hot targets, so the loss encodes them.

    Adam is the default for fine-tuning (pruning, QAT) at small rates; training passes its own.
    """
    tf = tensorflow()
    classes = model.output_shape[-1]
    # per-image losses: Keras averages them over the global batch under any strategy
    cross_entropy = keras().losses.CategoricalCrossentropy(
        label_smoothing=label_smoothing, reduction=keras().losses.Reduction.NONE)

    def loss(y_true, y_pred):
        labels = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), classes)
        return cross_entropy(labels, y_pred)

    model.compile(optimizer=make_optimizer(optimizer, learning_rate), loss=loss,
                  metrics=[keras().metrics.SparseCategoricalAccuracy(name="accuracy")])


def add_weight_decay(model, weight_decay: float) -> None:
    """L2 on every convolution kernel."""
    if weight_decay <= 0:
        return
    regularizer = keras().regularizers.L2(weight_decay)
    for layer in model.layers:
        if isinstance(layer, keras().layers.Conv2D):
            model.add_loss(lambda kernel=layer.kernel: regularizer(kernel))


class EpochProgress:
    """A live line per epoch: batch, loss, accuracy and time left; a summary line at its end."""

    def __init__(self, epochs: int, steps: int):
        self.epochs, self.steps = epochs, steps
        self.epoch, self.start = 0, time.perf_counter()
        self.live = sys.stderr.isatty()

    def callback(self):
        progress = self

        class Callback(keras().callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                progress.epoch, progress.start = epoch, time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                if progress.live and batch % 10 == 0:
                    spent = time.perf_counter() - progress.start
                    left = spent / (batch + 1) * (progress.steps - batch - 1)
                    sys.stderr.write(f"\r  epoch {progress.epoch + 1}/{progress.epochs} "
                                     f"{batch + 1}/{progress.steps} loss {logs['loss']:.3f} "
                                     f"acc {logs['accuracy']:.3f} ~{left:.0f}s left   ")

            def on_epoch_end(self, epoch, logs=None):
                if progress.live:
                    sys.stderr.write("\r")
                print(f"  epoch {epoch + 1}/{progress.epochs}: loss {logs['loss']:.3f} "
                      f"acc {logs['accuracy']:.3f} val_acc {logs['val_accuracy']:.3f} "
                      f"({time.perf_counter() - progress.start:.0f}s)", flush=True)

        return Callback()


def restore_checkpoint(folder: Path, stage: str, config: dict, model):
    """Finished epochs and history of `<stage>_checkpoint` made with this exact config, if any,
    its weights loaded into `model`.

    A damaged checkpoint (a kill while the disk was full, a hand edit) is discarded with a
    warning and the model keeps its initial weights: the stage starts over.
    """
    weights, state_path = folder / f"{stage}_checkpoint.h5", folder / f"{stage}_checkpoint.json"
    if not (state_path.exists() and weights.exists()):
        return 0, {}
    initial = model.get_weights()
    try:
        state = json.loads(state_path.read_text())
        if state.get("config") != config:
            return 0, {}
        done, history = int(state["epochs_done"]), dict(state["history"])
        model.load_weights(weights)
    except Exception as exc:  # json, h5py and Keras raise many types for a damaged file
        model.set_weights(initial)
        remove_checkpoint(folder, stage)
        print(f"  {state_path.with_suffix('.*')}: damaged checkpoint discarded "
              f"({type(exc).__name__}); {stage} starts over", flush=True)
        return 0, {}
    print(f"  resuming {stage} after epoch {done} from {weights}")
    return done, history


def save_checkpoint(folder: Path, stage: str, config: dict, model, epochs_done: int,
                    history: dict) -> None:
    with artifacts.atomic_path(folder / f"{stage}_checkpoint.h5") as tmp:
        model.save_weights(tmp)
    artifacts.write_json(folder / f"{stage}_checkpoint.json",
                         {"config": config, "epochs_done": epochs_done, "history": history})


def remove_checkpoint(folder: Path, stage: str) -> None:
    for suffix in (".h5", ".json"):
        (folder / f"{stage}_checkpoint{suffix}").unlink(missing_ok=True)


def fit_epochs(model, splits: data.Splits, folder: Path, stage: str, config: dict,
               contract: InputContract, callbacks=(), augmented: bool = True,
               placement=None) -> tuple[dict, int]:
    """Fit from the last checkpoint of `stage`, checkpointing each epoch.

    `config` is the stage's resolved config (with epochs, batch_size and seed); a checkpoint
    made with another config is ignored. Returns the history of every epoch and how many
    epochs this call ran (fewer than all after a resume). With several workers (`placement`)
    the chief's checkpoint is the one resumed: every worker starts from its weights and epoch.
    """
    epochs, batch_size, seed = config["epochs"], config["batch_size"], config["seed"]
    steps = math.ceil(len(splits.y_train) / batch_size)
    if placement is not None and placement.workers > 1:
        done, history = resume_from_chief(placement, folder, stage, config, model)
    else:
        done, history = restore_checkpoint(folder, stage, config, model)
    if done >= epochs:
        return history, 0
    # The optimizer's moments are not in the weight checkpoint; the learning-rate schedule
    # continues exactly where it stopped, and the moments re-estimate within a few steps.
    model.optimizer.iterations.assign(done * steps)
    ds = training_dataset(splits.x_train, splits.y_train, batch_size, seed, done, augmented,
                          contract)
    try:
        model.fit(ds, epochs=epochs, initial_epoch=done, steps_per_epoch=steps, verbose=0,
                  validation_data=eval_dataset(splits.x_val, splits.y_val, contract),
                  callbacks=[EpochProgress(epochs, steps).callback(), stop_on_divergence(stage),
                             checkpoint_callback(folder, stage, config, model, history),
                             *callbacks])
    except tensorflow().errors.OpError as exc:
        if placement is None or placement.workers == 1:
            raise
        raise EdgefireError(f"{lost_worker(str(exc))}; rerun every worker's command to resume "
                            "after the last finished epoch") from None
    return history, epochs - done


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
    done, history = restore_checkpoint(folder, stage, config, plain)
    *weights, epochs = placement.from_chief([*plain.get_weights(), np.array([float(done)])])
    model.set_weights(weights)
    return int(epochs[0]), history


def stop_on_divergence(stage: str):
    """Stop at the first non-finite loss, before a broken model is checkpointed or saved."""

    class StopOnDivergence(keras().callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            loss = float(logs.get("loss", 0.0))
            if not math.isfinite(loss):
                raise EdgefireError(f"{stage} diverged: the loss became {loss} in epoch "
                                    f"{self.epoch + 1}, step {batch + 1}; nothing was saved "
                                    "(lower the --learning-rate)")

    return StopOnDivergence()


def checkpoint_callback(folder: Path, stage: str, config: dict, model, history: dict):
    """After each epoch: append its logs to `history` and checkpoint weights and history."""

    class Checkpoint(keras().callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for key, value in logs.items():
                history.setdefault(key, []).append(float(value))
            save_checkpoint(folder, stage, config, model, epoch + 1, history)

    return Checkpoint()


def accuracy(model, x, y, contract: InputContract) -> float:
    """Top-1 accuracy of a Keras model on uint8 images."""
    probs = model.predict(eval_dataset(x, np.zeros(len(x)), contract).map(lambda a, _: a),
                          verbose=0)
    return float(np.mean(np.argmax(probs, axis=1) == y))
