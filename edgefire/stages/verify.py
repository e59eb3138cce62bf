"""`edgefire verify`: run every artifact in every runtime that takes it and gate it.

Each number comes from running the file itself: Keras for the float reference, the LiteRT
interpreter for `.tflite`, onnxruntime for `.onnx` on the full test split, and the optional
runtimes of the matrix (`runtimes/matrix.py`: OpenVINO, TFLite Micro) beside them. The
deployable files of the chosen quantize precision are gated on bytes, drop from the float
reference and, optionally, minimum accuracy, in every runtime that ran them
(`--gate-runtimes native`: in their native runtime only); every other file is measured and
reported, never hidden.
"""

from __future__ import annotations

import gzip
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgefire import artifacts, data, formats, layout, npu, records, report, runtimes, tflite_file
from edgefire.config import TARGET_BYTES, VerifyConfig, as_dict
from edgefire.contract import InputContract
from edgefire.errors import EdgefireError, GateFailed
from edgefire.registry import DEFAULT, Context
from edgefire.report import stats
from edgefire.runtimes import matrix
from edgefire.stages import quant_error
from edgefire.version import VERSION


def network_size(reference: Path) -> dict:
    """Parameters and multiply-accumulates per image of the network every file of the build
    holds (the float reference's; pruning channels changes them, magnitude pruning does not)."""
    from edgefire import models

    model = models.load_model(reference)
    return {"parameters": int(model.count_params()),
            "multiply_accumulates": models.multiply_accumulates(model)}


def weight_sparsity(path: Path) -> float | None:
    """Fraction of zeros over the convolution kernels stored in the file."""
    zeros, total = formats.of(path).kernel_zeros(path)
    return zeros / total if total else None


def time_throughput(runner, images: np.ndarray, batch: int) -> float:
    """Images per second at batch `batch` (the runtime's default threads)."""
    chunk = images[:batch]
    runner.run(chunk)
    start, done = time.perf_counter(), 0
    while done < 4 * len(chunk):
        runner.run(chunk)
        done += len(chunk)
    return done / (time.perf_counter() - start)


def measure(path: Path, precision: str, x_test: np.ndarray, y_test: np.ndarray,
            config: VerifyConfig, contract: InputContract, classes: int) -> dict:
    """Everything verify reports about one artifact, except its comparison with the reference."""
    runner = runtimes.open_model(path, contract=contract)
    predicted = runtimes.predict(runner, x_test)
    raw = path.read_bytes()
    return {
        "name": path.name, "path": path.name, "format": formats.of(path).name,
        "precision": precision, "bytes": len(raw),
        "gzip_bytes": len(gzip.compress(raw, compresslevel=9, mtime=0)),
        "sha256": artifacts.sha256(path), "under_target": len(raw) <= config.max_bytes,
        "accuracy": float(np.mean(predicted == y_test)),
        "latency_ms": round(matrix.time_latency(path, x_test, config.latency_runs,
                                                        contract), 4),
        "throughput_ips": round(time_throughput(runner, x_test, config.throughput_batch), 1),
        "sparsity": weight_sparsity(path), **per_class(predicted, y_test, classes),
        "_predicted": predicted}


def per_class(predicted: np.ndarray, labels: np.ndarray, classes: int) -> dict:
    """Top-1 accuracy of each class and the confusion matrix (row: true, column: predicted)."""
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    totals = confusion.sum(axis=1)
    accuracy = [float(confusion[i, i] / totals[i]) if totals[i] else None
                for i in range(classes)]
    return {"class_accuracy": accuracy, "confusion": confusion.tolist()}


def gates(rows: list[dict], gated: set[str], config: VerifyConfig) -> list[dict]:
    """Size, drop and (optional) minimum-accuracy gates of every gated artifact: drop and
    accuracy in its native runtime and, unless `gate_runtimes` is "native", in every other
    runtime that ran it."""
    result = []
    for row in (r for r in rows if r["name"] in gated):
        size_ok = row["bytes"] <= config.max_bytes
        result.append(gate(row["name"], "bytes", config.max_bytes, row["bytes"], size_ok))
        native, *others = row["runtimes"]
        result += accuracy_gates(row["name"], row["runtimes"][native], config)
        for runtime in others if config.gate_runtimes == "all" else ():
            cell = row["runtimes"][runtime]
            if "accuracy" in cell:
                result += accuracy_gates(row["name"], cell, config, runtime)
    return result


def accuracy_gates(artifact: str, cell: dict, config: VerifyConfig,
                   runtime: str | None = None) -> list[dict]:
    """The drop gate (and the minimum-accuracy one, when set) of one runtime's cell."""
    drop = cell["accuracy_drop"]
    found = [gate(artifact, "accuracy_drop", config.max_drop, drop, drop <= config.max_drop,
                  runtime, ci95=cell["drop_ci95"], mcnemar_p=cell["mcnemar_p"])]
    if config.min_accuracy is not None:
        found.append(gate(artifact, "accuracy", config.min_accuracy, cell["accuracy"],
                          cell["accuracy"] >= config.min_accuracy, runtime,
                          ci95=cell["accuracy_ci95"]))
    return found


def gate(artifact: str, metric: str, limit, value, passed: bool, runtime: str | None = None,
         **uncertainty) -> dict:
    where = f" in {runtime}" if runtime else ""
    return {"name": f"{artifact} {metric}{where}", "artifact": artifact, "metric": metric,
            "limit": limit, "value": value, "passed": bool(passed),
            **({"runtime": runtime} if runtime else {}),
            **{k: v for k, v in uncertainty.items() if v is not None}}


def compare_with_reference(rows: list[dict], labels: np.ndarray) -> None:
    """Each row's drop and agreement against the first (the reference), with the 95%
    bootstrap intervals of its accuracy and drop and McNemar's p-value."""
    reference = rows[0]["_predicted"]
    for row in rows:
        agreement = float(np.mean(row["_predicted"] == reference))
        judged = matrix.judged(row["_predicted"] == labels, reference == labels,
                                       agreement)
        row.update({key: judged[key] for key in ("accuracy_drop", "agreement", "accuracy_ci95",
                                                 "drop_ci95", "mcnemar_p")})


def artifacts_to_verify(folder: Path) -> tuple[records.ExportRecord, dict[str, str], set[str],
                                                records.QuantizeRecord]:
    """Export's record (the float reference, the firmware pack), every file to measure with
    its precision, the gated ones and quantize's record.

    The whole set is checked first: every file present, intact and made from the current
    version of its inputs, so a stale or incomplete set is never certified.
    """
    exported, quantized = records.export(folder), records.quantize(folder)
    precisions = {exported.source: "float32", **exported.deployables}
    artifacts.check_set(folder, [*precisions, exported.labels, *exported.mcu,
                                 *(layout.record(s) for s in ("train", "quantize", "export"))],
                        "verify")
    gated = {name for name, precision in exported.deployables.items()
             if precision == quantized.precision}
    return exported, precisions, gated, quantized


def inputs(folder: Path, context: Context = DEFAULT) -> list[Path]:
    """What verify measures: the float reference and every deployable of export.json."""
    exported = records.export(folder)
    return [folder / exported.source, *(folder / name for name in exported.deployables)]


def size_budget(config: VerifyConfig, folder: Path, reference: str) -> int:
    """The size gate: `--max-bytes`, else the byte budget the pruned reference was made to,
    else the mission's 0.5 MB."""
    if config.max_bytes is not None:
        return config.max_bytes
    budget = records.prune(folder).budget if reference == layout.PRUNED else None
    return budget or TARGET_BYTES


# TFLite Micro's documentation: "the core runtime just fits in 16 KB on an Arm Cortex M3"
# (without the kernels of the model's operators)
MICRO_RUNTIME_BYTES = 16 * 1024


def firmware(folder: Path, pack: dict, config: VerifyConfig) -> tuple[dict | None, list[dict]]:
    """The firmware pack's RAM and flash for the report, and its gates (`--max-arena`,
    `--max-flash`); one line when a gate is asked of a build without a pack."""
    asked = [flag for flag, limit in (("--max-arena", config.max_arena),
                                      ("--max-flash", config.max_flash)) if limit is not None]
    if "arena_measured_bytes" not in pack:
        if asked:
            raise EdgefireError(f"{asked[0]}: {folder} has no firmware pack to gate "
                                f"({pack.get('skipped', 'built before the pack existed')})")
        return None, []
    model, arena = pack["model"], pack["arena_measured_bytes"]
    content = (folder / model).read_bytes()
    flash = len(content)
    summary = {"model": model, "arena_measured_bytes": arena, "arena_bytes": pack["arena_bytes"],
               "operators": pack["operators"], "flash_model_bytes": flash,
               "flash_model_parts": tflite_file.byte_breakdown(content),
               "float_operators": pack.get("float_operators", []),
               "runtime_flash_estimate_bytes": MICRO_RUNTIME_BYTES}
    found = []
    if config.max_arena is not None:
        found.append(gate(model, "arena_bytes", config.max_arena, arena, arena <= config.max_arena))
    if config.max_flash is not None:
        found.append(gate(model, "flash_bytes", config.max_flash, flash, flash <= config.max_flash))
    return summary, found


def check_npu(quantized: records.QuantizeRecord) -> None:
    """`--npu` needs Vela and an int8 TFLite: one line otherwise, before anything is run."""
    npu.check_available()
    if quantized.precision != "int8":
        raise EdgefireError(f"--npu: Vela compiles int8 TFLite files; this build's is "
                            f"{quantized.precision} (build with --quantize int8)")


def learned(accuracy: float, classes: int, images: int, epochs) -> dict:
    """Whether the float reference's top-1 is above what guessing gives (its 95% interval):
    a build below it passes its gates but says that the model did not learn."""
    upper = stats.chance_upper(classes, images)
    return {"chance": 1 / classes, "chance_upper": round(upper, 6),
            "above_chance": accuracy > upper, "epochs_trained": epochs}


def given_onnx_row(trained, dataset, config: VerifyConfig) -> dict | None:
    """The user's own ONNX file (`--model x.onnx`), measured in onnxruntime on the same test
    images with the normalization it expects, so its accuracy stands beside every file made
    from it (`given`: never gated). None for other builds, or when the file is gone or
    changed since (said in one line)."""
    if trained.given is None or trained.given.file_format != "onnx":
        return None
    path = trained.given.file
    if not path.is_file() or artifacts.sha256(path) != trained.given.sha256:
        print(f"! {path}: gone or changed since the build, so not measured", flush=True)
        return None
    own = InputContract(trained.contract.size, trained.config["mean"] or (0.0,) * 3,
                        trained.config["std"] or (255.0,) * 3)
    row = measure(path, "float32", dataset.x_test, dataset.y_test, config, own,
                  len(dataset.classes))
    return {**row, "path": str(path), "given": True}


def run(config: VerifyConfig, folder: Path, context: Context = DEFAULT) -> dict:
    """Measure every artifact, write report.json/.md/.png, raise GateFailed on a missed gate."""
    exported, precisions, gated, quantized = artifacts_to_verify(folder)
    reference = exported.source
    asked = as_dict(config)  # what the manifest records and a build compares
    config = replace(config, max_bytes=size_budget(config, folder, reference))
    pack, pack_gates = firmware(folder, exported.pack, config)
    if config.npu:
        check_npu(quantized)
    trained = records.train(folder)
    source, dataset = load_test_split(trained, context)
    rows = measured_rows(folder, precisions, trained, dataset, config)
    result = {
        "schema": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "edgefire_version": VERSION,
        "dataset": {"source": source, "name": Path(source).name or source,
                    "test_images": int(len(dataset.y_test))},
        "input": trained.contract.to_json(),
        "classes": list(trained.classes),
        "target_bytes": config.max_bytes, "reference": reference,
        **network_size(folder / reference),
        "gates": gates(rows, gated, config) + pack_gates, "artifacts": rows}
    if pack:
        result["mcu"] = pack
    npu_files = {}
    if config.npu:
        npu_files, result["npu"] = npu.compile_model(folder / quantized.artifact, config.npu)
    result.update(quantization_notes(quantized))
    result["passed"] = all(g["passed"] for g in result["gates"])
    result["learned"] = learned(rows[0]["accuracy"], len(trained.classes),
                                len(dataset.y_test), trained.rest.get("epochs_run"))
    if not result["learned"]["above_chance"]:
        print(f"! warning: {report.chance_line(result)}", flush=True)
    write_report(folder, result, npu_files, [folder / n for n in precisions], asked)
    failed = [g for g in result["gates"] if not g["passed"]]
    if failed:
        raise GateFailed("; ".join(report.describe_failure(g) for g in failed))
    return result


def load_test_split(trained: records.TrainRecord, context: Context):
    """The data source (where it is now, if the context says) and its decoded dataset, whose
    classes must be the model's."""
    source = data.recorded_source(trained, context.data)
    dataset = data.load(source, trained.contract.size)
    if tuple(dataset.classes) != trained.classes:
        raise EdgefireError(f"{source}: classes {list(dataset.classes)} differ from the "
                            f"model's {list(trained.classes)}")
    return source, dataset


def measured_rows(folder: Path, precisions: dict, trained: records.TrainRecord, dataset,
                  config: VerifyConfig) -> list[dict]:
    """A row per file, in its native runtime and every other that takes it (its agreement
    with the float reference, the first row), then the given ONNX file's if there is one."""
    contract = trained.contract
    rows = [measure(folder / name, precision, dataset.x_test, dataset.y_test, config,
                    contract, len(dataset.classes)) for name, precision in precisions.items()]
    given = given_onnx_row(trained, dataset, config)
    compare_with_reference(rows + ([given] if given else []), dataset.y_test)
    for row in rows:
        row["runtimes"] = matrix.matrix(
            folder / row["name"], row, row["_predicted"], rows[0]["_predicted"],
            dataset.y_test, dataset.x_test, contract, config.latency_runs, config.micro_images)
    if given:  # the user's file runs in onnxruntime only: it is not one edgefire made
        given["runtimes"] = matrix.native_cell(given, len(dataset.y_test))
        rows.append(given)
    for row in rows:
        del row["_predicted"]
    return rows


def quantization_notes(quantized) -> dict:
    """What quantize found that the report shows: the fallback's attempts and the layers of
    largest int8 error."""
    notes = {}
    if quantized.rest.get("fallback"):
        notes["fallback"] = quantized.rest["fallback"]
    layer_error = quantized.rest.get("layer_error")
    if layer_error:
        notes["layer_error"] = {**layer_error,
                                "layers": layer_error.get("layers", [])[:quant_error.SHOWN]}
    return notes


def write_report(folder: Path, result: dict, npu_files: dict, inputs: list[Path],
                 asked: dict) -> None:
    """The reports and Vela's files, together, then the stage's record: a failed verify is
    recorded (compare can check its report) but never "up to date"."""
    npu_paths = [folder / npu.FOLDER / name for name in npu_files]
    if npu_files:
        (folder / npu.FOLDER).mkdir(exist_ok=True)
    with artifacts.output_set():
        report.write(folder, result)
        for path in npu_paths:
            artifacts.write_bytes(path, npu_files[path.name])
    artifacts.record_stage(folder, "verify", [*(folder / n for n in report.OUTPUTS), *npu_paths],
                           inputs, asked, passed=result["passed"])


def summary(result: dict, folder: Path) -> str:
    """What `edgefire verify` prints when it is done: the report's tables."""
    return "\n".join([*report.printed(result), f"all gates passed -> {folder / layout.REPORT_MD}"])
