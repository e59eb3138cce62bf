"""`edgefire quantize`: the float Keras model to a TFLite model (int8, float16, dynamic, none).

int8 is full-integer post-training quantization (int8 builtin ops only, per-channel weights)
calibrated on seeded, class-balanced *training* images, with uint8 raw-pixel input by
default (scale 1/255, zero point 0), so an app hands camera bytes over unchanged.
`--qat` fine-tunes with quantization-aware training first; on a pruned model it uses the
prune-preserving scheme and also re-applies the pruning mask after every step (see
`KeepZeros`), because the scheme alone lets zeros drift back in the fire modules.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgefire import artifacts, data, layout, metadata, models, records, report, tflite_converter
from edgefire.config import PRECISIONS, QuantizeConfig, as_dict
from edgefire.contract import InputContract
from edgefire.errors import EdgefireError, ToolFailed
from edgefire.models import flip_average
from edgefire.registry import DEFAULT, Context
from edgefire.stages import fallback, fitting, quant_error
from edgefire.tfenv import keras, quiet, seed_everything, tensorflow


def calibration_indices(splits: data.Splits, count: int, seed: int) -> np.ndarray:
    """Indices into the *original training set* of a seeded, class-balanced calibration set."""
    picked = data.balanced_pick(splits.y_train, count, np.random.default_rng([seed, 7]))
    return splits.train_indices[picked]


class KeepZeros:
    """A callback re-applying a fixed pruning mask to every kernel after each training step."""

    def __init__(self, model):
        self.masks = [(w, tensorflow().constant(w.numpy() != 0, dtype=w.dtype))
                      for w in model.trainable_weights if "kernel" in w.name]

    def callback(self):
        masks = self.masks

        class Callback(keras().callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                for weight, mask in masks:
                    weight.assign(weight * mask)

        return Callback()


def annotated_for_qat(model):
    """The model with every layer tfmot can fake-quantize marked for it. The others (a given
    model's Rescaling or Normalization) train in float and are calibrated at conversion;
    batch normalization is marked too: tfmot folds it into the convolution before it."""
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry,
    )

    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()

    def annotate(layer):
        if registry.supports(layer) or isinstance(layer, keras().layers.BatchNormalization):
            return tfmot.quantization.keras.quantize_annotate_layer(layer)
        return layer

    return keras().models.clone_model(model, clone_function=annotate)


def quantization_aware(model, config: QuantizeConfig, splits: data.Splits, folder: Path,
                       seed: int, label_smoothing: float, pruned: bool,
                       contract: InputContract):
    """Fine-tune with fake quantization; returns the QAT model ready for the converter."""
    import tensorflow_model_optimization as tfmot

    seed_everything(seed)
    annotated = annotated_for_qat(model)
    try:
        with tfmot.quantization.keras.quantize_scope():
            if pruned:
                scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
                qat = tfmot.quantization.keras.quantize_apply(annotated, scheme)
            else:
                qat = tfmot.quantization.keras.quantize_apply(annotated)
    except (RuntimeError, ValueError) as exc:  # tfmot's refusal of a layer or a pattern
        raise ToolFailed(f"quantization-aware training: tfmot cannot quantize the model "
                         f"({str(exc).splitlines()[0][:200]})") from None
    steps = math.ceil(len(splits.y_train) / config.batch_size)

    def compile_at(scale: float) -> None:
        schedule = keras().optimizers.schedules.CosineDecay(config.qat_learning_rate * scale,
                                                            config.qat_epochs * steps)
        fitting.compile_model(qat, schedule, label_smoothing)

    callbacks = [KeepZeros(qat).callback()] if pruned else []
    stage_config = {**as_dict(config), "epochs": config.qat_epochs, "seed": seed}
    fit = fitting.fit_epochs(qat, splits, folder, "qat", stage_config, contract, compile_at,
                             callbacks)
    return qat, fit


def tensor_details(tflite: bytes) -> dict:
    """Input and output dtype, scale and zero point, read from the model itself."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet():
        interpreter = Interpreter(model_content=tflite)
    details = {}
    for key, tensor in (("input", interpreter.get_input_details()[0]),
                        ("output", interpreter.get_output_details()[0])):
        scale, zero_point = tensor["quantization"]
        details[key] = {"name": tensor["name"], "dtype": np.dtype(tensor["dtype"]).name,
                        "shape": [int(v) for v in tensor["shape"]], "scale": float(scale),
                        "zero_point": int(zero_point)}
    return details


def inputs(folder: Path, context: Context = DEFAULT) -> list[Path]:
    """What quantize reads: the float reference (checked intact); the trained model for a
    build without pruning."""
    if not context.pruned:
        return [artifacts.artifact_path(folder, layout.TRAINED, "quantize")]
    return [artifacts.source_model(folder)]


def run(config: QuantizeConfig, folder: Path, context: Context = DEFAULT) -> dict:
    """Write the quantized TFLite model and its metadata into the artifacts folder; a build
    without pruning (`context.pruned` False) quantizes the trained model and drops prune's
    record in the same write of the manifest, so a failure before it leaves the record
    whole."""
    model_path, = inputs(folder, context)
    trained = records.train(folder)
    contract, seed = trained.contract, trained.seed
    model = models.load_model(model_path)
    if config.qat:
        flip_average.refuse(model, model_path, "fine-tuned with quantization-aware training")
    dataset, splits = data.of_build(trained, context.data)
    models.check_input_shape(model, splits, model_path)
    sparsity = models.kernel_sparsity(model)["overall"]
    indices = calibration_indices(splits, config.calibration_samples, seed)
    qat_fit = None
    if config.qat:
        model, qat_fit = quantization_aware(model, config, splits, folder, seed,
                                            trained.config["label_smoothing"],
                                            sparsity > 0.01, contract)
    calibration = dataset.x_train[indices]
    tflite, sparse = tflite_converter.smallest_encoding(model, config.mode, config.io,
                                                        calibration, sparsity, contract)
    layer_error = layer_errors(model, config, calibration, splits, contract,
                               seed)
    budget = None
    if config.mode == "int8" and len(splits.y_val):
        retry = Retries(model, config, calibration, splits, contract, folder, trained,
                        sparsity)
        tflite, budget = fallback.within_budget(
            tflite, fitting.accuracy(model, splits.x_val, splits.y_val, contract),
            config.max_drop, retry.measure, retry.all(layer_error) if config.fallback else ())
    tflite = metadata.attach(tflite, trained.arch, trained.classes, contract)
    details = tensor_details(tflite)
    check_raw_pixel_input(details, config, contract)
    out = folder / layout.deployable(trained.arch, PRECISIONS[config.mode], "tflite")
    result = {"stage": "quantize", "config": as_dict(config), "source": model_path.name,
              "mode": config.mode, "precision": PRECISIONS[config.mode], "artifact": out.name,
              "sparse_encoding": sparse, "sparsity": sparsity,
              "qat_sparsity": qat_sparsity(model) if config.qat else None,
              "calibration": {"split": "train", "seed": seed,
                              "indices": [int(i) for i in indices]} if config.mode == "int8"
              else None,
              "tensors": details, "layer_error": layer_error, "fallback": budget,
              "qat_history": qat_fit.history if qat_fit else {},
              "qat_recoveries": qat_fit.recoveries if qat_fit else []}
    with artifacts.output_set():
        artifacts.write_bytes(out, tflite)
        artifacts.write_json(folder / layout.record("quantize"), result)
    names = {"input_names": [details["input"]["name"]],
             "output_names": [details["output"]["name"]]}
    artifacts.record_stage(folder, "quantize", [out, folder / layout.record("quantize")],
                           [model_path], as_dict(config), {out.name: names},
                           forget=() if context.pruned else ("prune",))
    fitting.remove_checkpoint(folder, "qat")
    return result


class Retries:
    """The fallback's attempts after post-training int8 (`fallback.py`): QAT (unless it ran
    already), then the layers of largest error kept in float, one more each time."""

    def __init__(self, model, config: QuantizeConfig, calibration: np.ndarray,
                 splits: data.Splits, contract: InputContract, folder: Path,
                 trained: records.TrainRecord, sparsity: float):
        self.model, self.config, self.calibration = model, config, calibration
        self.splits, self.contract, self.folder = splits, contract, folder
        self.trained, self.sparsity = trained, sparsity
        self._calibrated: bytes | None = None

    def measure(self, tflite: bytes) -> float:
        return fallback.val_accuracy(tflite, self.splits.x_val, self.splits.y_val,
                                     self.contract)

    def all(self, layer_error: dict | None) -> list[fallback.Retry]:
        rows = (layer_error or {}).get("layers", [])
        qat = not self.config.qat and flip_average.network_of(self.model) is None
        retries = [("quantization-aware training", self.qat)] if qat else []
        return retries + [(f"{rows[k - 1]['layer']} in float too", self.keeping(rows[:k]))
                          for k in range(1, len(rows) + 1)]

    def qat(self) -> tuple[bytes, list[str]]:
        model, _ = quantization_aware(self.model, self.config, self.splits, self.folder,
                                      self.trained.seed,
                                      self.trained.config["label_smoothing"],
                                      self.sparsity > 0.01, self.contract)
        tflite, _ = tflite_converter.smallest_encoding(model, "int8", self.config.io,
                                                       self.calibration, self.sparsity,
                                                       self.contract)
        return tflite, []

    def keeping(self, rows: list[dict]):
        def make() -> tuple[bytes, list[str]]:
            if self._calibrated is None:
                self._calibrated = fallback.calibrated(tflite_converter.converter(
                    self.model, "int8", self.config.io, self.calibration, False, self.contract))
            tflite = fallback.keep_in_float(self._calibrated, [r["node"] for r in rows],
                                            self.config.io)
            return tflite, [r["layer"] for r in rows]
        return make


def layer_errors(model, config: QuantizeConfig, calibration: np.ndarray, splits: data.Splits,
                 contract: InputContract, seed: int) -> dict | None:
    """The debugger's per-layer error of the int8 conversion (None for other modes or without
    validation images); a debugger failure is recorded, not fatal: it is a diagnosis."""
    if config.mode != "int8" or len(splits.y_val) == 0:
        return None
    setup = tflite_converter.converter(model, config.mode, config.io, calibration, False, contract)
    try:
        return quant_error.on_validation(setup, model.name, splits, contract, seed)
    except Exception as exc:  # the debugger raises what the converter and interpreter raise
        return {"error": str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}


def qat_sparsity(qat_model) -> dict:
    """Zeros in the kernels a QAT model will hand to the converter."""
    kernels = {w.name: w.numpy() for w in qat_model.weights if w.name.endswith("kernel:0")}
    per_layer = {name.rsplit("/", 1)[0]: float(np.mean(k == 0)) for name, k in kernels.items()}
    total = sum(k.size for k in kernels.values())
    zeros = sum(int(np.sum(k == 0)) for k in kernels.values())
    return {"layers": per_layer, "overall": zeros / total if total else 0.0}


def check_raw_pixel_input(details: dict, config: QuantizeConfig, contract: InputContract
                          ) -> None:
    """An int8 model must take raw pixels: the scale of one pixel step (1/255 for std 255) and
    zero point 0 (uint8) or -128 (int8)."""
    if config.mode != "int8":
        return
    tensor = details["input"]
    want_zero = 0 if config.io == "uint8" else -128
    if not (math.isclose(tensor["scale"], 1.0 / contract.std[0], rel_tol=1e-4)
            and tensor["zero_point"] == want_zero):
        raise EdgefireError(f"int8 input quantization is scale {tensor['scale']:.6g}, zero "
                            f"point {tensor['zero_point']}; expected raw pixels (scale 1/255, "
                            f"zero point {want_zero})")


def summary(result: dict, folder: Path) -> str:
    """What `edgefire quantize` prints when it is done."""
    tensor = result["tensors"]["input"]
    lines = [f"{result['mode']} TFLite: {(folder / result['artifact']).stat().st_size:,} bytes, "
             f"input {tensor['dtype']} (scale {tensor['scale']:.6g}, zero point "
             f"{tensor['zero_point']}) -> {folder / result['artifact']}"]
    if result["fallback"] and len(result["fallback"]["attempts"]) > 1:
        lines.append(report.fallback_summary(result["fallback"]))
    return "\n".join(lines)
