"""`make bench-front`: accuracy per byte of every committed build, one row each: its int8
TFLite's bytes, top-1 with its 95% interval, TFLite Micro arena, LiteRT latency against the
reference's, and what its training cost here.

    python -m edgefire.bench.front --out artifacts/bench-front.json [FOLDER ...]
    python -m edgefire.bench.front --make-builds [--dry-run] --data DIR   # `make front-builds`

The folders (default: `artifacts` and every build under `artifacts/variants`) are finished
builds: top-1, its interval and the arena are their verify's, read from report.json once the
manifest shows it and the int8 file unchanged since. Latency is measured here, every file in
the same run, round after round (`bench.channels.latencies`), as a ratio to the first
folder's. Training cost is the train and prune stages' epochs' time summed over every run,
resumed ones included; records from before edgefire kept it hold their last run's wall time
(`epochs` says so).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from edgefire import artifacts, layout, records, report
from edgefire.bench.channels import CALLS, ROUNDS, latencies
from edgefire.errors import EdgefireError

TARGETS = ((100_000, 0.85, "MLPerf Tiny: 85% at 100,000 B"),
           (500_000, 0.89, "AlexNet-level: 89% at 500,000 B"))

# Each committed build and the one command that made it, `edgefire build --quantize int8`
# with these options, `--data` and `--artifacts`: `make front-builds` runs them. In a clone
# every stage is up to date and nothing runs (a test says so); elsewhere they train (hours:
# docs/results.md says how many).
COMMANDS = {
    "artifacts": "--npu ethos-u55-128",
    "artifacts/variants/channels_100k":
        "--prune channels --target-bytes 100000 --channel-allocation sensitivity --distill "
        "--prune-epochs 64 --prune-learning-rate 0.04 --micro-images 0",
    "artifacts/variants/resnet8": "--arch resnet8 --epochs 60 --sparsity 0",
    "artifacts/variants/resnet20": "--arch resnet20 --epochs 100 --sparsity 0",
    "artifacts/variants/resnet8_distilled":
        "--arch resnet8 --teacher artifacts/variants/resnet20 --epochs 150 --sparsity 0",
    "artifacts/variants/resnet8_150": "--arch resnet8 --epochs 150 --sparsity 0",
    "artifacts/variants/resnet8_150_flip":
        "--arch resnet8 --epochs 150 --sparsity 0 --flip-average",
}


def build_command(folder: str, data: Path) -> list[str]:
    """The edgefire arguments that make the committed build `folder`, from the repo's root."""
    return ["build", "--quantize", "int8", *COMMANDS[folder].split(), "--data", str(data),
            "--artifacts", folder]


def make_builds(data: Path, dry_run: bool) -> int:
    """Run each committed build's command, in order; the first failure's exit code."""
    for folder in COMMANDS:
        command = [sys.executable, "-m", "edgefire.cli", *build_command(folder, data)]
        print("$ edgefire " + " ".join(command[3:]) + (" --dry-run" if dry_run else ""),
              flush=True)
        code = subprocess.run(command + (["--dry-run"] if dry_run else [])).returncode
        if code:
            return code
    return 0


def committed_builds(root: Path = Path("artifacts")) -> list[Path]:
    variants = sorted(p.parent for p in (root / "variants").glob("*/" + layout.REPORT_JSON))
    return [root, *variants]


def measured(folder: Path) -> dict:
    """A build's row from its verified report (one line if the report or file changed)."""
    artifacts.check_set(folder, [layout.REPORT_JSON], "bench-front")
    verified = records.report(folder)
    int8 = verified.file("tflite", "int8")
    if int8 is None or int8.accuracy_ci95 is None:
        raise EdgefireError(f"{folder}: its report has no int8 TFLite with a 95% interval "
                            "(verify it with today's edgefire)")
    micro = int8.runtimes.get("tflite-micro") or {}
    trained = records.train(folder)
    averaged = ", flip-averaged" if trained.config.get("flip_average") else ""
    return {"build": str(folder),
            "arch": ("given model" if trained.config["model"] else trained.arch) + averaged,
            "parameters": verified.parameters, "int8_bytes": int8.bytes,
            "top1": int8.accuracy, "top1_ci95": list(int8.accuracy_ci95),
            "arena_bytes": micro.get("arena_bytes"),
            "file": str(artifacts.artifact_path(folder, int8.path, "bench-front")),
            "training_seconds": training_seconds(folder, trained),
            "epochs": epochs_timed(trained)}


def epochs_timed(trained: records.TrainRecord) -> str:
    """Which epochs the training time covers: all, or a resumed run's last only."""
    run, asked = trained.rest.get("epochs_run"), trained.config["epochs"]
    if trained.rest.get("fit_seconds") is not None or run == asked:
        return f"{asked} epochs"
    return f"{run} of {asked} epochs: its last run's only"


def training_seconds(folder: Path, trained: records.TrainRecord) -> float:
    """Train's and prune's fitting time over every run, resumed ones included; a record from
    before edgefire kept each epoch's time holds its last run's wall time only."""
    stages = [trained.rest]
    if (folder / layout.record("prune")).exists():
        stages.append(records.prune(folder).rest)
    return round(sum(s.get("fit_seconds") or s.get("wall_seconds") or 0.0 for s in stages), 1)


def table(rows: list[dict]) -> list[str]:
    lines = ["| build | model | parameters | int8 bytes | top-1 (95% CI) | arena bytes | "
             "latency ms (x first) | training s (epochs timed) |",
             "|---|---|---:|---:|---|---:|---:|---:|"]
    base = rows[0]["latency_ms"]
    for r in rows:
        low, high = r["top1_ci95"]
        arena = f"{r['arena_bytes']:,}" if r["arena_bytes"] else "-"
        parameters = f"{r['parameters']:,}" if r["parameters"] else "-"
        lines.append(f"| {r['build']} | {r['arch']} | {parameters} | {r['int8_bytes']:,} | "
                     f"{r['top1']:.2%} ({low:.2%}-{high:.2%}) | {arena} | "
                     f"{r['latency_ms']:.3f} ({r['latency_ms'] / base:.2f}) | "
                     f"{r['training_seconds']:,.0f} ({r['epochs']}) |")
    return lines


def chart(rows: list[dict], path: Path) -> None:
    plt = report.pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        low, high = r["top1_ci95"]
        top1 = r["top1"] * 100
        ax.errorbar(r["int8_bytes"] / 1000, top1, yerr=[[top1 - low * 100], [high * 100 - top1]],
                    fmt="o", capsize=3, label=Path(r["build"]).name)
    # builds of one size share an x: a legend, not labels beside the points, keeps them apart
    ax.legend(loc="lower right", fontsize=8)
    for size, accuracy, label in TARGETS:
        ax.axvline(size / 1000, color="grey", linestyle=":")
        ax.plot([0, size / 1000], [accuracy * 100] * 2, color="tab:red", linestyle="--",
                linewidth=1)
        ax.annotate(label, (size / 1000, accuracy * 100), fontsize=7, ha="left",
                    xytext=(3, 3), textcoords="offset points", color="tab:red")
    ax.set_xlim(0, 650)
    ax.set_xlabel("int8 TFLite (kB)")
    ax.set_ylabel("top-1 in LiteRT, CIFAR-10 test split (%)")
    ax.set_title("Accuracy per byte of the committed builds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, help="Finished builds (default: "
                        "artifacts and artifacts/variants/*); the first is the latency base.")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench-front.json"))
    parser.add_argument("--make-builds", action="store_true", help="Instead: run each "
                        "committed build's command (COMMANDS), which finds a clone's up to date")
    parser.add_argument("--dry-run", action="store_true", help="With --make-builds: say what "
                        "each would run")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/cifar10-jpeg"))
    args = parser.parse_args(argv)
    if args.make_builds:
        return make_builds(args.data, args.dry_run)
    rows, left_out = [], []
    for folder in args.folders or committed_builds():
        try:
            rows.append(measured(folder))
        except EdgefireError as exc:  # said, recorded, and the other builds measured
            print(f"bench-front: left out: {exc}")
            left_out.append(str(exc))
    if not rows:
        raise SystemExit("bench-front: no build to measure")
    for row, ms in zip(rows, latencies([r["file"] for r in rows]), strict=True):
        row["latency_ms"] = ms
    artifacts.write_results(args.out, rows, table(rows), rounds=ROUNDS, calls_per_round=CALLS,
                            left_out=left_out)
    chart(rows, args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
