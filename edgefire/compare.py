"""`edgefire compare`: one row per built artifacts folder, for the README's ablation table."""

from __future__ import annotations

from pathlib import Path

from edgefire import artifacts, layout, records
from edgefire.errors import EdgefireError

HEADER = ["| folder | arch | parameters | MACs / image | epochs | int8 TFLite bytes | int8 top-1 "
          "| float top-1 | train (s) | build (s) |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]


def row(folder: Path) -> dict:
    """What one build measured: from its train.json, report.json and build.json."""
    from edgefire import models

    # numbers are only as good as the files they came from: a hand-edited or stale report,
    # or one whose files have changed since, is refused
    trained = records.train(folder)
    artifacts.check_set(folder, [layout.REPORT_JSON, layout.record("train")], "compare")
    result = records.report(folder)
    train = trained.rest
    arch = trained.arch
    int8 = result.file("tflite", "int8")
    if int8 is None:
        raise EdgefireError(f"{folder}: report has no int8 TFLite (build with "
                            "--quantize int8)")
    pruned = pruned_record(folder) if result.reference == layout.PRUNED else None
    macs = (pruned and pruned.multiply_accumulates) or train.get("multiply_accumulates")
    if macs is None:  # builds from before train.json recorded it
        macs = models.multiply_accumulates(models.build(arch, trained.contract.shape,
                                                        len(trained.classes)))
    parameters = pruned.parameters if pruned else train["parameters"]
    return {"folder": str(folder), "arch": arch, "parameters": parameters,
            "macs": macs, "epochs": train["epochs"],
            "int8_bytes": int8.bytes, "int8_accuracy": int8.accuracy,
            "float_accuracy": result.named(result.reference).accuracy,
            "train_seconds": train["wall_seconds"], "build_seconds": _build_seconds(folder)}


def pruned_record(folder: Path) -> records.PruneRecord | None:
    """prune.json when the build pruned (the parameters and MACs of the shipped model)."""
    if not (folder / layout.record("prune")).exists():
        return None
    artifacts.check_set(folder, [layout.record("prune")], "compare")
    return records.prune(folder)


def _build_seconds(folder: Path) -> float | None:
    """Wall time of the last `edgefire build`, only if it ran every stage (not incremental)
    and the manifest records its log."""
    path = folder / layout.BUILD_LOG
    if layout.BUILD_LOG not in artifacts.load_manifest(folder)["artifacts"]:
        return None  # only a log the build recorded: a file put there says nothing
    artifacts.check_set(folder, [layout.BUILD_LOG], "compare")
    build = artifacts.read_json(path, "build log", "build")
    stages, seconds = build.get("stages"), build.get("seconds")
    if not (isinstance(stages, dict) and stages and isinstance(seconds, int | float)
            and not isinstance(seconds, bool) and seconds >= 0
            and all(isinstance(s, dict) and "status" in s for s in stages.values())):
        raise EdgefireError(f"{path}: not a build log edgefire wrote (stages and seconds): "
                            "run `edgefire build` again")
    if any(stage["status"] != "ran" for stage in stages.values()):
        return None
    return seconds


def table(rows: list[dict]) -> list[str]:
    lines = list(HEADER)
    for r in rows:
        build = "-" if r["build_seconds"] is None else f"{r['build_seconds']:,.0f}"
        lines.append(f"| {r['folder']} | {r['arch']} | {r['parameters']:,} | {r['macs']:,} | "
                     f"{r['epochs']} | {r['int8_bytes']:,} | {r['int8_accuracy']:.2%} | "
                     f"{r['float_accuracy']:.2%} | {r['train_seconds']:,.0f} | {build} |")
    return lines
