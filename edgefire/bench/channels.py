"""`make bench-channels`: channel pruning's trade-off, accuracy against int8 bytes, MACs,
TFLite Micro arena and LiteRT latency, every row from one trained reference.

    python -m edgefire.bench.channels --trained artifacts-of-a-build --work .bench-channels \
        --out artifacts/bench-channels.json

Each row copies the reference's trained model and records into a folder of its own and runs
the stage commands on it: `prune` (its options), `quantize`, `export`, `verify
--micro-images 0` (TFLite Micro on the whole test split, for its arena). A row whose folder
already holds a report is measured, not built again (`--rebuild` builds it again). Latency is
measured here, for all rows in the same run: batch 1, one thread, the rows' int8 files taken
in turn, round after round, so a machine that slows down slows every row alike.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgefire import artifacts, report

ROWS = {
    "0%": ("--sparsity", "0"),  # the same fine-tune, nothing removed
    "25%": ("--prune", "channels", "--channel-sparsity", "0.25"),
    "40%": ("--prune", "channels", "--channel-sparsity", "0.4"),
    "50%": ("--prune", "channels", "--channel-sparsity", "0.5"),
    "60%": ("--prune", "channels", "--channel-sparsity", "0.6"),
    "100,000 B": ("--prune", "channels", "--target-bytes", "100000"),
    "100,000 B, 48 epochs": ("--prune", "channels", "--target-bytes", "100000", "--epochs", "48"),
    "100,000 B, 48 epochs, distilled": ("--prune", "channels", "--target-bytes", "100000",
                                        "--epochs", "48", "--distill"),
    "100,000 B, 64 epochs, distilled": ("--prune", "channels", "--target-bytes", "100000",
                                        "--epochs", "64", "--distill"),
    "100,000 B, 64 epochs, distilled, by sensitivity": (
        "--prune", "channels", "--target-bytes", "100000", "--epochs", "64", "--distill",
        "--channel-allocation", "sensitivity"),
    **{f"100,000 B, 64 epochs, distilled, by sensitivity, learning rate {rate}": (
        "--prune", "channels", "--target-bytes", "100000", "--epochs", "64", "--distill",
        "--channel-allocation", "sensitivity", "--learning-rate", rate)
       for rate in ("0.04", "0.08")},
}
REFERENCE_FILES = ("trained.h5", "history.json", "training.png", "train.json", "manifest.json")
ROUNDS, CALLS = 7, 300


def folder_name(row: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in row).strip("-")


def build_row(row: str, trained: Path, folder: Path) -> float:
    """Copy the reference's training and run the stages; the seconds they took."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in REFERENCE_FILES:
        shutil.copy2(trained / name, folder / name)
    start = time.perf_counter()
    for stage in (["prune", *ROWS[row]], ["quantize"], ["export"],
                  ["verify", "--micro-images", "0"]):
        done = subprocess.run([sys.executable, "-m", "edgefire.cli", *stage, "--artifacts",
                               str(folder)], capture_output=True, text=True)
        with open(folder / "bench-stages.log", "a") as log:
            log.write(done.stdout + done.stderr)
        if done.returncode != 0:
            raise SystemExit(f"{row}: {stage[0]} exited {done.returncode} ({folder})")
    seconds = round(time.perf_counter() - start, 1)
    artifacts.write_json(folder / "bench-row.json", {"row": row, "seconds": seconds})
    return seconds


def measured(row: str, folder: Path) -> dict:
    report = json.loads((folder / "report.json").read_text())
    prune = json.loads((folder / "prune.json").read_text())
    int8 = next(a for a in report["artifacts"]
                if a["format"] == "tflite" and a["precision"] == "int8")
    micro = int8["runtimes"].get("tflite-micro") or {}
    timing = folder / "bench-row.json"
    return {"row": row, "options": list(ROWS[row]), "folder": str(folder),
            "channel_sparsity": (prune.get("channels") or {}).get("channel_sparsity", 0.0),
            "parameters": report["parameters"], "macs": report["multiply_accumulates"],
            "int8_bytes": int8["bytes"], "top1": int8["accuracy"],
            "micro_top1": micro.get("accuracy"), "arena_bytes": micro.get("arena_bytes"),
            "file": str(folder / int8["path"]),
            "seconds": json.loads(timing.read_text())["seconds"] if timing.exists() else None}


def latencies(files: list[str]) -> list[float]:
    """Median ms per batch-1 call of each file, one thread, files taken in turn each round."""
    from ai_edge_litert.interpreter import Interpreter

    runners = []
    for file in files:
        interpreter = Interpreter(model_path=file, num_threads=1)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        pixels = np.random.default_rng(0).integers(0, 256, detail["shape"]).astype(
            detail["dtype"])
        runners.append((interpreter, detail["index"], pixels))
    rounds = [[] for _ in files]
    for _ in range(ROUNDS):
        for times, (interpreter, index, pixels) in zip(rounds, runners, strict=True):
            start = time.perf_counter()
            for _ in range(CALLS):
                interpreter.set_tensor(index, pixels)
                interpreter.invoke()
            times.append((time.perf_counter() - start) * 1000 / CALLS)
    return [round(float(np.median(times)), 4) for times in rounds]


def table(rows: list[dict]) -> list[str]:
    base = rows[0]
    lines = ["| filters removed | parameters | MACs | int8 bytes | arena bytes | latency ms "
             "(x 0%) | int8 top-1 | drop from 0% (points) | TFLite Micro top-1 | stages (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        arena = f"{r['arena_bytes']:,}" if r["arena_bytes"] else "-"
        micro = f"{r['micro_top1']:.2%}" if r["micro_top1"] is not None else "-"
        name = r["row"] if r["row"].endswith("%") else \
            f"{r['row']} ({r['channel_sparsity']:.1%})"
        lines.append(
            f"| {name} | {r['parameters']:,} | {r['macs'] / 1e6:.2f} M | {r['int8_bytes']:,} | "
            f"{arena} | {r['latency_ms']:.3f} ({r['latency_ms'] / base['latency_ms']:.2f}) | "
            f"{r['top1']:.2%} | {(base['top1'] - r['top1']) * 100:.2f} | {micro} | "
            f"{r['seconds'] if r['seconds'] is not None else '-'} |")
    return lines


def chart(rows: list[dict], path: Path) -> None:
    plt = report.pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["int8_bytes"] / 1000 for r in rows], [r["top1"] * 100 for r in rows], "o")
    for r in rows:
        ax.annotate(r["row"], (r["int8_bytes"] / 1000, r["top1"] * 100), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.axvline(100, color="grey", linestyle=":")
    ax.set_xlabel("int8 TFLite (kB)")
    ax.set_ylabel("top-1 in LiteRT (%)")
    ax.set_title("Channel pruning of the reference, CIFAR-10 test split")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trained", type=Path, default=Path("artifacts"),
                        help="A build's folder holding trained.h5 and its records.")
    parser.add_argument("--work", type=Path, default=Path(".bench-channels"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench-channels.json"))
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--only", nargs="*", help="Rows to run (default: all).")
    args = parser.parse_args(argv)
    rows = []
    for row in ROWS:
        if args.only and row not in args.only:
            continue
        folder = args.work.resolve() / folder_name(row)
        if args.rebuild or not (folder / "report.json").exists():
            build_row(row, args.trained, folder)
        rows.append(measured(row, folder))
    for r, ms in zip(rows, latencies([r["file"] for r in rows]), strict=True):
        r["latency_ms"] = ms
    artifacts.write_results(args.out, rows, table(rows), rounds=ROUNDS, calls_per_round=CALLS)
    chart(rows, args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
