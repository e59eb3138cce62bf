"""`edgefire export`: the deployable files, named for what they are, and `labels.txt`.

The files are the rows of `DEPLOYABLES`, named `<arch>_<precision>.<format>`:

- float32 TFLite: the float reference (sparse-encoded where that is smaller);
- the quantized `.tflite` made by `quantize` (listed, not rewritten);
- float32 ONNX: tf2onnx, with short tensor names;
- int8 ONNX (int8 mode): the better on the *validation* split (then the smaller)
  of two QDQ candidates: tf2onnx's translation of the int8 TFLite (its exact scales, uint8
  raw-pixel input), and onnxruntime static quantization of the float ONNX (U8S8 with 7-bit
  weights) calibrated on the same images. A candidate is judged by its worst validation
  accuracy over the installed runtimes that take ONNX; one that a runtime cannot run is only
  taken when no candidate runs everywhere;
- `mcu/` (an int8 TFLite): the firmware pack, C++ source for TFLite Micro (`mcu.py`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefire import (
    artifacts,
    data,
    formats,
    layout,
    mcu,
    metadata,
    models,
    records,
    runtimes,
    tflite_converter,
)
from edgefire.config import ExportConfig, as_dict
from edgefire.contract import InputContract
from edgefire.errors import EdgefireError, ToolFailed, first_line
from edgefire.models import flip_average
from edgefire.registry import DEFAULT, Context
from edgefire.tfenv import quiet, tensorflow

ONNX_INPUT = "image"
ONNX_OUTPUT = "scores"


def float_onnx(model, opset: int) -> bytes:
    """A float32 ONNX model of `model` (input `image`, NHWC pixel / 255), checked in full."""
    import onnx
    import tf2onnx

    tf = tensorflow()
    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=ONNX_INPUT),)
    try:
        with quiet():
            proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    except Exception as exc:  # tf2onnx raises many types on unsupported graphs
        raise ToolFailed(f"tf2onnx (opset {opset}) failed: {exc}") from None
    shorten_names(proto)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:  # an op it left untranslated
        grouped = [layer.name for layer in model.layers if getattr(layer, "groups", 1) > 1]
        hint = (f" (layers {', '.join(grouped)} are grouped convolutions, which tf2onnx "
                "cannot translate)" if grouped else "")
        raise ToolFailed(f"tf2onnx (opset {opset}) wrote an invalid ONNX graph: "
                         f"{first_line(exc)}{hint}") from None
    return proto.SerializeToString()


def shorten_names(proto) -> None:
    """Rename internal tensors and nodes (`t0`, `n0`...), name the batch dimension, drop docs.

    tf2onnx keeps TensorFlow's long scoped names, which cost bytes in a file that sits at the
    0.5 MB line. Names follow the order of first use in the (stable) node list, and the
    initializers are sorted by it, because tf2onnx emits initializers in an order that
    changes from process to process.
    """
    graph = proto.graph
    names = {graph.input[0].name: ONNX_INPUT, graph.output[0].name: ONNX_OUTPUT}
    graph.input[0].name, graph.output[0].name = ONNX_INPUT, ONNX_OUTPUT
    keep = {ONNX_INPUT, ONNX_OUTPUT}

    def short(name: str) -> str:
        if not name or name in keep:
            return names.get(name, name)
        return names.setdefault(name, f"t{len(names)}")

    for index, node in enumerate(graph.node):
        node.name = f"n{index}"
        node.doc_string = ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    for init in sorted(graph.initializer, key=lambda i: i.name):  # unused ones, if any, last
        init.name = short(init.name)
    order = {name: rank for rank, name in enumerate(names.values())}
    initializers = sorted(graph.initializer, key=lambda i: order[i.name])
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    for info in graph.value_info:
        info.name = short(info.name)
    # tf2onnx numbers unknown dimensions with a process-wide counter ("unk__593"): a name that
    # changes between runs would break byte-identical rebuilds
    for info in [*graph.input, *graph.output, *graph.value_info]:
        for dim in info.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.dim_param = "batch"
    graph.doc_string = ""
    proto.doc_string = ""


class _Calibration:
    """onnxruntime's CalibrationDataReader over uint8 images (normalized by the contract)."""

    def __init__(self, images: np.ndarray, contract: InputContract, batch: int = 50):
        self.batches = iter([contract.normalize(images[i:i + batch])
                             for i in range(0, len(images), batch)])

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {ONNX_INPUT: batch}


def ort_int8_onnx(float_bytes: bytes, calibration: np.ndarray, contract: InputContract
                  ) -> bytes:
    """Static QDQ quantization of the float ONNX model: uint8 activations, int8 per-channel
    weights reduced to 7 bits.

    Signed activations (S8S8) cost 2.04 points of top-1 in OpenVINO 2026.4's CPU plugin (the
    fire modules' 1x1 squeeze convolutions, their inputs at zero point -128) against none in
    onnxruntime; uint8 activations match in both. 7-bit weights keep uint8 x int8 products
    from saturating on x86 CPUs without VNNI (onnxruntime's and OpenVINO's int8 kernels).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(float_bytes)
        with quiet():
            quantize_static(str(src), str(dst), _Calibration(calibration, contract),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                            calibrate_method=CalibrationMethod.MinMax)
        proto = onnx.load(str(dst))
    shorten_names(proto)
    checked(proto, "onnxruntime's static quantization")
    return proto.SerializeToString()


def checked(proto, maker: str) -> None:
    """`proto` passes onnx.checker's full check, or ToolFailed names its maker."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ToolFailed(f"{maker} made an invalid int8 ONNX: {first_line(exc)}") from None


def tflite_int8_onnx(tflite_path: Path, opset: int) -> bytes:
    """tf2onnx's QDQ translation of the int8 TFLite: the same scales, uint8 pixel input."""
    import tf2onnx

    try:
        with quiet():
            proto, _ = tf2onnx.convert.from_tflite(str(tflite_path), opset=opset)
    except Exception as exc:  # tf2onnx raises many types on unsupported graphs
        raise ToolFailed(f"tf2onnx failed translating {tflite_path}: {exc}") from None
    shorten_names(proto)
    checked(proto, "tf2onnx")
    return proto.SerializeToString()


def best_int8_onnx(candidates: dict[str, bytes], x_val: np.ndarray, y_val: np.ndarray,
                   contract: InputContract):
    """The candidate whose worst validation accuracy over the installed ONNX runtimes is the
    highest (then the smaller), preferring those every runtime can run."""
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method, content in candidates.items():
            path = Path(tmp) / f"{method}.onnx"
            path.write_bytes(content)
            scores[method] = {"bytes": len(content),
                              "val_accuracy": validation_accuracy(path, x_val, y_val, contract)}

    def rank(method):
        accuracies = scores[method]["val_accuracy"].values()
        ran = [a for a in accuracies if isinstance(a, float)]
        return len(ran) == len(accuracies), min(ran, default=0.0), -scores[method]["bytes"]

    return max(scores, key=rank), scores


def validation_accuracy(path: Path, x_val: np.ndarray, y_val: np.ndarray,
                        contract: InputContract) -> dict[str, float | str]:
    """Top-1 in each installed runtime that takes the file's format, or why it cannot run."""
    result = {}
    for runtime in runtimes.runtimes_for(formats.of(path).name):
        if not runtime.installed():
            continue
        try:
            runner = runtimes.open_model(path, contract=contract, runtime=runtime.name)
            result[runtime.name] = float(np.mean(runtimes.predict(runner, x_val) == y_val))
        except EdgefireError as exc:
            result[runtime.name] = str(exc)
    return result


class Sources:
    """What the makers of the deployables read: the float model, the quantized TFLite, the
    build's metadata and contract; the data and the float ONNX are made once, when asked."""

    def __init__(self, folder: Path, config: ExportConfig, data_override: str | None):
        self.config, self.data_override = config, data_override
        self.quantized = records.quantize(folder)
        self.trained = records.train(folder)
        self.inputs = inputs(folder)
        self.model_path, self.quantized_path = self.inputs
        self.model = models.load_model(self.model_path)
        self.arch, self.contract = self.trained.arch, self.trained.contract
        self.notes: dict = {}  # what a maker chose, for export.json
        self._float_onnx: bytes | None = None
        self._data = None

    def data(self):
        """The build's dataset and its splits, loaded once."""
        if self._data is None:
            self._data = data.of_build(self.trained, self.data_override)
        return self._data

    def float_onnx(self) -> bytes:
        if self._float_onnx is None:
            self._float_onnx = float_onnx(self.model, self.config.opset)
        return self._float_onnx


def float32_tflite(sources: Sources) -> bytes:
    tflite, _ = tflite_converter.smallest_encoding(sources.model, "none", "uint8", np.zeros(0),
                                             sources.quantized.sparsity, sources.contract)
    return metadata.attach(tflite, sources.arch, sources.trained.classes,
                           sources.contract)


def int8_onnx(sources: Sources) -> bytes:
    """The more accurate on the validation split of the two QDQ candidates; one that its
    maker fails to make, or makes invalid, is recorded with why and left out."""
    dataset, splits = sources.data()
    calibration = dataset.x_train[np.asarray(sources.quantized.calibration, dtype=int)]
    def from_tflite():
        if flip_average.network_of(sources.model) is not None:
            raise ToolFailed("a flip-averaged TFLite holds a batch of one image "
                             "(flip_average.static_batch); its ONNX would too")
        return tflite_int8_onnx(sources.quantized_path, sources.config.opset)

    makers = {
        "tf2onnx-from-int8-tflite": from_tflite,
        "onnxruntime-static-u8s8": lambda: ort_int8_onnx(sources.float_onnx(), calibration,
                                                         sources.contract)}
    candidates, failed = {}, {}
    for method, make in makers.items():
        try:
            candidates[method] = make()
        except ToolFailed as exc:
            failed[method] = {"error": str(exc)}
    if not candidates:
        raise ToolFailed("no int8 ONNX could be made: " + "; ".join(
            f"{method}: {entry['error']}" for method, entry in failed.items()))
    best, scores = best_int8_onnx(candidates, splits.x_val, splits.y_val, sources.contract)
    sources.notes["int8_onnx"] = {"chosen": best, "candidates": {**scores, **failed}}
    return candidates[best]


@dataclass(frozen=True)
class Deployable:
    """A file export makes: its format (suffix and runtime), precision, when it is made (from
    quantize.json), how, and whether it is made from the quantized TFLite as well as from the
    float model (its provenance in the manifest). A new format is one row and one function."""

    file_format: str
    precision: str
    wanted: Callable[[records.QuantizeRecord], bool]
    make: Callable[[Sources], bytes]
    from_quantized: bool = False


DEPLOYABLES = (
    Deployable("tflite", "float32", lambda q: q.precision != "float32", float32_tflite),
    Deployable("onnx", "float32", lambda q: True, lambda sources: sources.float_onnx()),
    Deployable("onnx", "int8", lambda q: q.mode == "int8", int8_onnx, from_quantized=True),
)


def firmware_pack(sources: Sources) -> tuple[dict[str, bytes], dict]:
    """`mcu/` for an integer TFLite, when TFLite Micro is installed to measure it: its files
    by name and what export.json records of it (or why there is none)."""
    micro = runtimes.RUNTIMES["tflite-micro"]
    if not sources.config.mcu:
        return {}, {"skipped": "--no-mcu"}
    if sources.quantized.precision != "int8":
        return {}, {"skipped": f"no int8 TFLite (quantize made {sources.quantized.precision})"}
    if not micro.installed():
        print(f"! {mcu.FOLDER}/ not written: tflite-micro {micro.missing()}", flush=True)
        return {}, {"skipped": f"tflite-micro {micro.missing()}"}
    dataset, _ = sources.data()
    made = mcu.from_tflite(sources.quantized_path, list(sources.trained.classes),
                           sources.contract, dataset.x_test, dataset.y_test)
    if made is None:
        return {}, {"skipped": "the int8 TFLite takes or gives float tensors"}
    files, details = made
    return {f"{mcu.FOLDER}/{name}": content for name, content in files.items()}, details


def inputs(folder: Path, context: Context = DEFAULT) -> list[Path]:
    """What export reads: the float reference and the quantized TFLite (checked intact)."""
    return [artifacts.source_model(folder),
            artifacts.artifact_path(folder, records.quantize(folder).artifact, "export")]


def run(config: ExportConfig, folder: Path, context: Context = DEFAULT) -> dict:
    """Write every deployable file and labels.txt; record them with their I/O names."""
    sources = Sources(folder, config, context.data)
    made = {layout.deployable(sources.arch, row.precision, row.file_format): row
            for row in DEPLOYABLES if row.wanted(sources.quantized)}
    content = {name: row.make(sources) for name, row in made.items()}
    pack, pack_details = firmware_pack(sources)
    quantized = sources.quantized_path
    deployables = {quantized.name: {"format": "tflite",
                                    "precision": sources.quantized.precision,
                                    **formats.of(quantized).io_names(quantized.read_bytes())}}
    deployables.update({name: {"format": row.file_format, "precision": row.precision,
                               **formats.FORMATS[row.file_format].io_names(content[name])}
                        for name, row in made.items()})
    result = {"stage": "export", "config": as_dict(config), "source": sources.model_path.name,
              "deployables": deployables, "labels": layout.LABELS,
              "int8_onnx": sources.notes.get("int8_onnx"),
              "mcu": {"files": list(pack), **pack_details}}
    if pack:
        (folder / mcu.FOLDER).mkdir(exist_ok=True)
    with artifacts.output_set():
        for name, data_bytes in {**content, **pack}.items():
            artifacts.write_bytes(folder / name, data_bytes)
        artifacts.write_text(folder / layout.LABELS,
                             metadata.labels_text(sources.trained.classes))
        artifacts.write_json(folder / layout.record("export"), result)
    outputs = [folder / name
               for name in [*content, *pack, layout.LABELS, layout.record("export")]]
    made_from = {name: [sources.model_path, *([quantized] if row.from_quantized else [])]
                 for name, row in made.items()}
    made_from.update({name: [quantized] for name in pack})
    artifacts.record_stage(folder, "export", outputs, sources.inputs, as_dict(config),
                           deployables, made_from=made_from)
    return result


def summary(result: dict, folder: Path) -> str:
    """What `edgefire export` prints when it is done: each deployable and its bytes."""
    return "\n".join(f"{(folder / name).stat().st_size:>9,} B  {folder / name}"
                     for name in result["deployables"])
