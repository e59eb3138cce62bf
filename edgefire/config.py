"""Every default of every stage in one place, each with why, and the rules each value must
follow (checked when a config is made, so the CLI, a config file and the Python API give the
same messages); the CLI, config files and the API override the defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from edgefire.checks import choice, in_range
from edgefire.errors import EdgefireError
from edgefire.npu import TARGETS as NPU_TARGETS

MAX_EPOCHS = 10_000  # a typo of extra zeros should not start a year-long run
MAX_SEED = 2**32 - 1  # NumPy's and TensorFlow's seeds are unsigned 32-bit
MAX_BATCH = 1_000_000  # past any dataset here; 2**66 overflowed TensorFlow's int64 shapes
TARGET_BYTES = 500_000  # the mission's 0.5 MB, read strictly (SI)


def option(default, help: str, flag: str | None = None, build: str | bool = True):
    """A field that is also a command-line option (see `cli_options`): `flag` (default
    `--field-name`) on its stage's command, and on `edgefire build` the same flag, or `build`,
    a flag of its own, or none (False)."""
    return field(default=default, metadata={"help": help, "flag": flag, "build": build})


def flag_of(config_field, on_build: bool = False) -> str:
    """The flag of an option field on its stage's command, or on `edgefire build`."""
    meta = config_field.metadata
    if on_build and isinstance(meta["build"], str):
        return meta["build"]
    return meta["flag"] or "--" + config_field.name.replace("_", "-")


def where_set(cls, name: str, section: str) -> str:
    """Where a field is set, in the words of every front end: "--learning-rate on prune,
    --prune-learning-rate on build, [prune] learning_rate in a config file"."""
    found = next(f for f in fields(cls) if f.name == name)
    stage, build = flag_of(found), flag_of(found, True)
    if found.metadata["build"] is False:
        on = f"{stage} on {section}"
    elif stage == build:
        on = f"{stage} on {section} and build"
    else:
        on = f"{stage} on {section}, {build} on build"
    return f"{on}, [{section}] {name} in a config file"


def build_flags(cls) -> dict[str, str]:
    """A config's stage flags that `edgefire build` spells otherwise, and how it spells them
    (prune's `--epochs` is build's `--prune-epochs`), so that a message names the flag typed."""
    return {flag_of(f): flag_of(f, True) for f in fields(cls)
            if "help" in f.metadata and isinstance(f.metadata["build"], str)}


@dataclass(frozen=True)
class TrainConfig:
    # Keras's download and cache; a path selects a local copy
    data: str = option("cifar10", "'cifar10', a cifar-10-python.tar.gz, a cifar-10-batches-py "
                                  "folder or an image-folder root.")
    arch: str = option("squeezenet", "Architecture: squeezenet (the reference SqueezeNet), "
                       "squeezenet_bypass, squeezenet32, resnet8, resnet20, or "
                       "FILE.py:FUNCTION (function(input_shape, classes) -> tf_keras Model).")
    # a Keras classifier to start from instead of `arch` (models/given.py); its files are
    # named for it, and `epochs` 0 takes it as it is
    model: str | None = option(None, "A Keras classifier to start from instead of --arch: "
                               "tf_keras .h5 or .keras, Keras 3 .keras, or a SavedModel folder; "
                               "--epochs 0 takes it as it is.")
    # `--arch FILE.py:FUNCTION`: the function(input_shape, classes) returns a Keras model that
    # the recipe trains from scratch; set from `arch` (absolute file, function), which then
    # names the build's files by the function
    arch_file: str | None = None
    image_size: int | None = option(None, "Model input is N x N; images of any size are "
                                    "resized to it [default: 32, or a given model's own].")
    # the model input is (pixel - mean) / std per channel, pixels 0-255; None: 0 and 255, or
    # raw pixels for a given model that rescales itself (one value or three)
    mean: tuple[float, ...] | None = option(
        None, "A given model's input is (pixel - mean) / std: one value or three, pixel units "
              "[default: 0, or raw pixels for a model that rescales itself].")
    std: tuple[float, ...] | None = option(None, "See --mean [default: 255].")
    head_epochs: int = option(0, "A given model with a new head: epochs of the head alone "
                                 "(body frozen) first.")
    # knowledge distillation in training (stages/teacher.py); the loss is weight x T^2 x KL
    # at temperature T + (1 - weight) x cross-entropy, as prune's --distill
    teacher: str | None = option(None, "Distil from a teacher: a Keras model file or a "
                                 "finished build's folder (its float reference), scoring "
                                 "each augmented batch; its bytes do not count.")
    distill_weight: float = 0.9
    distill_temperature: float = 4.0
    # 40 epochs took 628 s here (16 s each): a third of the 45-minute build. SGD keeps gaining
    # with a longer cosine (README, "Recipe v2"); 120 leaves the build ~10 minutes of headroom.
    epochs: int = option(120, "Training epochs (0 with --model: take it as it is).")
    # trains fastest per epoch on 2 CPU cores among 64/128/256
    batch_size: int = option(128, "Images per training step.")
    # Nesterov SGD beat Adam by ~2 points in a PyTorch replica of this recipe (issue 12);
    # measured here in Keras in the README's seed table.
    optimizer: str = option("sgd", "Training optimizer: sgd (Nesterov momentum 0.9) or adam.")
    learning_rate: float | None = option(  # after warm-up, cosine to zero
        None, "Peak learning rate [default: sgd 0.1, adam 0.003; fine-tuning a --model: "
              "sgd 0.005, adam 0.0001].")
    warmup_epochs: int = 2  # a short linear warm-up keeps the first large steps stable
    # ... and never fewer steps than this (up to a fifth of the run): a 40-image folder has
    # one step an epoch, so two epochs of warm-up were two steps. Measured with the mask rule
    # of PruneConfig (make bench-datasets, int8 top-1, before -> after): digits-8 78.0 ->
    # 75.8 (355 test images), cifar3-mixed 67.0 -> 67.0, cifar2-40 88 -> 91 (100 images):
    # within test noise; kept so that no run starts at full rate (docs/measurements.md)
    warmup_min_steps: int = 50
    label_smoothing: float = 0.1  # mild regularisation; costs nothing at inference
    # the reference's 0.5 before conv10 + batch norm underfits here
    dropout: float = option(0.1, "Dropout rate before conv10 while training; the shipped "
                                 "model is the same at any rate.")
    weight_decay: float | None = None  # L2 coefficient on kernels; None: OPTIMIZERS
    batch_norm: bool = True  # training only: folded into the convolutions before export
    augment: bool = True  # random crop (pad 4) and horizontal flip, in the tf.data graph
    flip_average: bool = option(False, "Ship a model that averages its scores for each image "
                                       "and its mirror image: the same weights, twice the "
                                       "compute (no pruning, no QAT).")
    # mixup's Beta(alpha, alpha) after crop and flip, 0 = none (fitting.mixup); with a
    # teacher, the teacher scores the mixed images. Off until it measurably helps: docs/results.md
    mixup: float = 0.0
    # cutout's square side in pixels after crop and flip, 0 = none (fitting.cutout); off
    # until it measurably helps: docs/results.md
    cutout: int = 0
    # carved out of train, seeded and class-balanced; it only watches (the last epoch ships)
    val_size: int = option(5000, "Validation images carved out of the training split "
                                 "(class-balanced; at most a tenth of it).")
    seed: int = option(0, "Seed of splits, shuffles and init.")
    limit: int | None = option(None, "Train on a class-balanced subset of N images (smoke "
                                     "runs).")

    @property
    def contract(self):
        """The input contract of the built-in models this config trains."""
        from edgefire.contract import InputContract

        return InputContract(size=self.image_size, mean=self.mean or (0.0,) * 3,
                             std=self.std or (255.0,) * 3)

    def __post_init__(self):
        """Check every value; fill the learning rate and weight decay left at None with the
        optimizer's own (a given model's: the fine-tuning rate); store the model path
        resolved, so later stages run from anywhere, and the data path as given (a checkout
        that moves with its data stays up to date; see `data.recorded_source`)."""
        from edgefire.models import ARCHITECTURES, check_size

        object.__setattr__(self, "mean", channels(self.mean, "--mean", 0, 255))
        object.__setattr__(self, "std", channels(self.std, "--std", 0, None))
        if self.model is None and (self.mean is not None or self.std is not None):
            raise EdgefireError("--mean and --std describe the input of a given model "
                                "(--model); the models edgefire trains take pixel / 255")
        if self.model is None and self.head_epochs:
            raise EdgefireError("--head-epochs trains a given model's new head alone "
                                "(--model); the models edgefire trains have no such head")
        if self.teacher is not None:
            if not str(self.teacher).strip():
                raise EdgefireError("--teacher must not be empty")
            object.__setattr__(self, "teacher", str(Path(self.teacher).expanduser().resolve()))
            if self.epochs == 0:
                raise EdgefireError("--teacher needs --epochs >= 1: --epochs 0 trains nothing")
        in_range(self.distill_weight, 0, 1, "distill_weight")
        in_range(self.distill_temperature, 0, None, "distill_temperature", low_open=True)
        if self.model is not None and self.head_epochs and self.epochs == 0:
            raise EdgefireError("--head-epochs needs --epochs >= 1: --epochs 0 takes the "
                                "model as it is, and a new head must be trained")
        if self.model is not None:
            self._given_model()
        else:
            if self.arch_file is None and ".py:" in self.arch:
                self._own_architecture()
            if self.image_size is None:
                object.__setattr__(self, "image_size", 32)
            if self.arch_file is None:
                choice(self.arch, list(ARCHITECTURES), "--arch")
                check_size(self.arch, self.image_size)
        choice(self.optimizer, list(OPTIMIZERS), "--optimizer")
        peak, decay = OPTIMIZERS[self.optimizer]
        if self.learning_rate is None:
            peak = FINETUNE_PEAK[self.optimizer] if self.model else peak
            object.__setattr__(self, "learning_rate", peak)
        if self.weight_decay is None:
            object.__setattr__(self, "weight_decay", decay)
        if self.data != "cifar10":  # as given: a relative path is the build's folder's
            object.__setattr__(self, "data", str(Path(self.data).expanduser()))
        in_range(self.epochs, 0 if self.model else 1, MAX_EPOCHS, "--epochs")
        in_range(self.head_epochs, 0, MAX_EPOCHS, "--head-epochs")
        in_range(self.batch_size, 1, MAX_BATCH, "--batch-size")
        in_range(self.learning_rate, 0, None, "--learning-rate", low_open=True)
        in_range(self.warmup_epochs, 0, MAX_EPOCHS, "warmup_epochs")
        in_range(self.warmup_min_steps, 0, None, "warmup_min_steps")
        in_range(self.label_smoothing, 0, 1, "label_smoothing", high_open=True)
        in_range(self.dropout, 0, 1, "--dropout", high_open=True)
        in_range(self.weight_decay, 0, None, "weight_decay")
        in_range(self.mixup, 0, None, "mixup")
        in_range(self.cutout, 0, self.image_size, "cutout")
        in_range(self.val_size, 1, None, "--val-size")
        in_range(self.seed, 0, MAX_SEED, "--seed")
        in_range(self.limit, 2, None, "--limit")
        if self.image_size is not None:
            in_range(self.image_size, 8, 512, "--image-size")

    @property
    def built_in(self) -> bool:
        """One of `models.ARCHITECTURES` (batch norm folded by name), not the user's."""
        return self.model is None and self.arch_file is None

    def _own_architecture(self) -> None:
        """`FILE.py:FUNCTION`, checked; the file is read only when training runs."""
        file, _, function = self.arch.rpartition(":")
        path = Path(file).expanduser().resolve()
        if not path.is_file():
            raise EdgefireError(f"--arch {self.arch}: {path} not found")
        if not function.isidentifier():
            raise EdgefireError(f"--arch {self.arch}: {function!r} is not a function name")
        object.__setattr__(self, "arch_file", f"{path}:{function}")
        object.__setattr__(self, "arch", function.lower())

    def _given_model(self) -> None:
        """A given model names the build's files; its path is stored resolved."""
        from edgefire.models.given import name_of

        if not str(self.model).strip():
            raise EdgefireError("--model must not be empty")
        path = str(Path(self.model).expanduser().resolve())
        if self.arch not in (TrainConfig.arch, name_of(path)):  # recorded: the model's name
            raise EdgefireError(f"--model and --arch {self.arch} both say which model to "
                                "start from; give one of them")
        object.__setattr__(self, "model", path)
        object.__setattr__(self, "arch", name_of(path))


def channels(value, option: str, low: float, high: float | None):
    """One value for every channel, or three, as a tuple of three floats (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = [float(part) for part in value.split(",")]
        except ValueError:
            raise EdgefireError(f"{option} must be one number or three, comma-separated (got "
                                f"{value!r})") from None
    values = [value] if isinstance(value, int | float) else list(value)
    if len(values) not in (1, 3):
        raise EdgefireError(f"{option} takes one value or three (got {len(values)})")
    for v in values:
        in_range(v, low, high, option, low_open=option == "--std")
    return tuple(float(v) for v in values * (3 // len(values)))


@dataclass(frozen=True)
class PruneConfig:
    # magnitude: zeros in the kernels (smaller gzip, the same dense int8 file); channels:
    # whole filters removed (a smaller int8 file, fewer MACs, a smaller arena); both: the two
    method: str = option("magnitude", "magnitude (zeros in the kernels), channels (whole "
                         "filters removed: a smaller int8 file) or both.", flag="--prune")
    channel_sparsity: float = option(0.0, "channels: fraction removed: of every convolution's "
                                          "filters (uniform), of the parameters (sensitivity).")
    target_bytes: int | None = option(None, "channels: remove the fewest filters that bring "
                                            "the int8 TFLite under N bytes.")
    channel_allocation: str = option(
        "uniform", "channels: uniform (the same fraction of every convolution's filters) or "
                   "sensitivity (more where a layer's measured accuracy loss per parameter is "
                   "least).")
    # 0.5 cost 1.6 points here
    sparsity: float = option(0.4, "Fraction of zeros in each pruned kernel (0: no magnitude "
                                  "pruning).")
    # On the 40-epoch SGD model (validation 81.30%), 40% pruning then: Adam 5e-4 for 4
    # epochs 80.22%, for 8 80.70%; Adam 1e-3 for 4 80.20%; Nesterov SGD 0.01 for 4 80.52%,
    # for 8 81.00%. On the 120-epoch one (83.22%): SGD for 8 82.80%, for 16 83.40% (README,
    # "Recipe v2"); 16 adds about 100 s to the build.
    epochs: int = option(16, "Pruning fine-tune epochs (the sparsity target is reached at "
                             "2/3 of them).", build="--prune-epochs")
    optimizer: str = option("sgd", "Fine-tuning optimizer: sgd (Nesterov momentum 0.9, like "
                                   "training) or adam.", build=False)
    # a tenth of training's peak: recover, do not retrain
    learning_rate: float = option(0.01, "Pruning fine-tune peak learning rate.",
                                  build="--prune-learning-rate")
    # small, sensitive first and last layers
    keep_dense: tuple[str, ...] = option(("conv", "conv10"), "Layers left dense, "
                                         "comma-separated ('' prunes every convolution).")
    batch_size: int = 128
    # the fine-tune also matches the unpruned model's scores (knowledge distillation); the
    # loss is weight x T^2 x KL at temperature T + (1 - weight) x cross-entropy
    distill: bool = option(False, "Fine-tune the pruned model to match the unpruned one's "
                                  "scores too (knowledge distillation).")
    distill_weight: float = 0.9
    distill_temperature: float = 4.0
    frequency: int = 50  # mask update interval in steps; tfmot's 100 can skip short runs
    # ... and at least this many updates before the target: 1,298 digits images gave 11
    # steps an epoch and 4 updates, the first zeroing 23% of every kernel at once
    min_mask_updates: int = 20

    @property
    def channels(self) -> bool:
        return self.method in ("channels", "both")

    @property
    def magnitude(self) -> bool:
        return self.method in ("magnitude", "both") and self.sparsity > 0

    @property
    def prunes(self) -> bool:  # a build without it has no prune stage
        return self.magnitude or self.channels

    def __post_init__(self):
        object.__setattr__(self, "keep_dense", tuple(self.keep_dense))
        choice(self.method, PRUNE_METHODS, "--prune")
        in_range(self.channel_sparsity, 0, 1, "--channel-sparsity", high_open=True)
        choice(self.channel_allocation, CHANNEL_ALLOCATIONS, "--channel-allocation")
        in_range(self.target_bytes, 1, None, "--target-bytes")
        if self.method != "magnitude" and not (self.channel_sparsity or self.target_bytes):
            raise EdgefireError(f"--prune {self.method} needs --channel-sparsity R or "
                                "--target-bytes N")
        if self.method == "magnitude" and (self.channel_sparsity or self.target_bytes):
            raise EdgefireError("--channel-sparsity and --target-bytes need --prune channels "
                                "(or both)")
        in_range(self.sparsity, 0, 1, "--sparsity", high_open=True)
        in_range(self.epochs, 1, MAX_EPOCHS, "--epochs")
        choice(self.optimizer, list(OPTIMIZERS), "--optimizer")
        in_range(self.learning_rate, 0, None, "--learning-rate", low_open=True)
        in_range(self.batch_size, 1, None, "batch_size")
        in_range(self.frequency, 1, None, "frequency")
        in_range(self.distill_weight, 0, 1, "distill_weight")
        in_range(self.distill_temperature, 0, None, "distill_temperature", low_open=True)
        in_range(self.min_mask_updates, 1, None, "min_mask_updates")


@dataclass(frozen=True)
class QuantizeConfig:
    mode: str = option("int8", "int8 (full integer), float16, dynamic (range) or none.",
                       flag="--quantize")
    qat: bool = option(False, "Quantization-aware fine-tuning before conversion (int8).")
    qat_epochs: int = option(1, "QAT fine-tuning epochs.")
    qat_learning_rate: float = option(1e-4, "QAT fine-tuning learning rate.")
    # MLPerf Tiny calibrates on a few hundred training images
    calibration_samples: int = option(500, "Training images that calibrate int8 ranges.")
    io: str = option("uint8", "int8 model input/output type: uint8 (phones, MediaPipe) or "
                              "int8 (microcontrollers).")
    batch_size: int = 128
    # int8: the most top-1 (points, validation split) the file may lose against the float
    # model before the fallback (QAT, then layers kept in float) tries again; build sets it
    # with verify's --max-drop, so the budget and the gate are the same number
    max_drop: float = option(1.0, "int8: largest top-1 drop (points) on the validation "
                                  "split before the fallback tries again.", build=False)
    fallback: bool = option(True, "int8: past --max-drop on validation, try QAT, then keep "
                                  "the worst layers in float.")

    def __post_init__(self):
        choice(self.mode, QUANTIZE_MODES, "--quantize")
        in_range(self.max_drop, 0, 100, "--max-drop")
        choice(self.io, IO_TYPES, "--io")
        in_range(self.qat_epochs, 1, MAX_EPOCHS, "--qat-epochs")
        in_range(self.qat_learning_rate, 0, None, "--qat-learning-rate", low_open=True)
        in_range(self.calibration_samples, 1, None, "--calibration-samples")
        in_range(self.batch_size, 1, None, "batch_size")
        if self.qat and self.mode != "int8":
            raise EdgefireError(f"--qat needs --quantize int8 (got --quantize {self.mode}): "
                                "quantization-aware training targets the int8 model")


@dataclass(frozen=True)
class ExportConfig:
    # QDQ per-channel needs >= 13; every onnxruntime of the last years has it
    opset: int = option(13, "ONNX opset (13-21).")
    mcu: bool = option(True, "Write the firmware pack mcu/ (C++ source for TFLite Micro, with "
                             "the measured arena) beside an int8 TFLite.")

    def __post_init__(self):  # below 13 the int8 ONNX cannot be written (per-channel QDQ)
        in_range(self.opset, 13, 21, "--opset")


@dataclass(frozen=True)
class VerifyConfig:
    # None: the byte budget channel pruning was given (`--target-bytes`, read from the
    # record of the prune that made the float reference), else the mission's 0.5 MB
    max_bytes: int | None = option(None, "Size gate in bytes [default: prune's "
                                         "--target-bytes, else 500,000 (0.5 MB)].")
    max_drop: float = option(1.0, "Largest allowed top-1 drop from the float reference, in "
                                  "points (build: also the int8 fallback's budget).")
    min_accuracy: float | None = option(None, "Optional floor on top-1 accuracy (0-1).")
    latency_runs: int = 200  # batch-1 inferences timed per artifact, at most (see time_latency)
    throughput_batch: int = 256
    gate_runtimes: str = option("all", "all: gate each file in every runtime that ran it; "
                                       "native: in its own runtime only.")
    micro_images: int = option(2000, "Test images (class-balanced) TFLite Micro runs; 0 = all.")
    max_arena: int | None = option(None, "Firmware gate: largest TFLite Micro arena of the "
                                         "int8 TFLite, in bytes (the one measured).")
    max_flash: int | None = option(None, "Firmware gate: largest int8 TFLite (the model's "
                                         "flash), in bytes.")
    npu: str | None = option(None, "Arm Ethos-U NPU to compile the int8 TFLite for with Vela "
                                   f"into npu/, with its estimates ({', '.join(NPU_TARGETS)}).")

    def __post_init__(self):
        choice(self.gate_runtimes, GATE_RUNTIMES, "--gate-runtimes")
        in_range(self.max_arena, 1, None, "--max-arena")
        in_range(self.max_flash, 1, None, "--max-flash")
        if self.npu is not None:
            choice(self.npu, NPU_TARGETS, "--npu")
        in_range(self.micro_images, 0, None, "--micro-images")
        in_range(self.max_bytes, 1, None, "--max-bytes")
        in_range(self.max_drop, 0, 100, "--max-drop")
        in_range(self.min_accuracy, 0, 1, "--min-accuracy")
        in_range(self.latency_runs, 1, None, "latency_runs")
        in_range(self.throughput_batch, 1, None, "throughput_batch")


# optimizer -> (peak learning rate, L2 coefficient on kernels). SGD: Nesterov momentum 0.9,
# peak 0.1 and L2 2.5e-4 (the gradient of L2 is 2 * coefficient * w, so this is PyTorch's
# weight_decay 5e-4 of the replica). Adam: the recipe of the builds before issue 12.
OPTIMIZERS = {"sgd": (0.1, 2.5e-4), "adam": (3e-3, 5e-4)}
# optimizer -> peak learning rate fine-tuning a given model: a trained model is to be
# adjusted, not retrained (the bring-your-own-model issue: a CIFAR-10 classifier from
# elsewhere, 75.5% -> 84.0% in 5 epochs of Nesterov SGD, cosine from 0.005)
FINETUNE_PEAK = {"sgd": 0.005, "adam": 1e-4}
# --quantize mode -> the precision of the file it makes: the one list of modes and precisions
PRECISIONS = {"int8": "int8", "float16": "float16", "dynamic": "dynamic", "none": "float32"}
QUANTIZE_MODES = tuple(PRECISIONS)
PRUNE_METHODS = ("magnitude", "channels", "both")
CHANNEL_ALLOCATIONS = ("uniform", "sensitivity")
IO_TYPES = ("uint8", "int8")
GATE_RUNTIMES = ("all", "native")


def as_dict(config) -> dict:
    """A JSON-ready dict of a config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
