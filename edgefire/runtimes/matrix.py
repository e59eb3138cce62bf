"""The runtime matrix: every artifact run in each installed runtime that takes its format.

The native runtime (`formats.FORMATS`' `native`) measures a file on the whole test split; the others
(OpenVINO, TFLite Micro) run the same file on the same images, or TFLite Micro, one image per
invoke on its reference kernels, on a class-balanced subset. Each entry is judged against the
float reference on the very images it ran: accuracy, drop (with its paired 95% interval),
agreement with the file's native runtime, batch-1 latency on one thread. A runtime that
refuses a file is a result (`error`), one that is not installed is `skipped`.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np

from edgefire import data, runtimes
from edgefire.contract import InputContract
from edgefire.errors import EdgefireError
from edgefire.report import stats

LATENCY_SECONDS = 1.0  # of timed runs per file, after MIN_LATENCY_RUNS
MIN_LATENCY_RUNS = 20


def time_latency(path: Path, images: np.ndarray, runs: int, contract: InputContract,
                 runtime: str | None = None) -> float:
    """Mean milliseconds per image at batch 1 on one thread (after a few warm-up runs), over
    `runs` images or as many as LATENCY_SECONDS take, at least MIN_LATENCY_RUNS: a slow runner
    (Keras calls a model eagerly, 26 ms an image for the tests' SqueezeNet) is timed as well in
    fewer runs."""
    runner = runtimes.open_model(path, threads=1, contract=contract, runtime=runtime)
    for image in images[:5]:
        runner.run(image[None])
    start = time.perf_counter()
    done = 0
    while done < runs and (done < MIN_LATENCY_RUNS or
                           time.perf_counter() - start < LATENCY_SECONDS):
        runner.run(images[done % len(images)][None])
        done += 1
    return (time.perf_counter() - start) / done * 1000


def balanced_subset(labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of `count` images, as equal a share of every class as the classes allow
    (seeded, so every verify runs the same ones); every image when `count` is 0."""
    if count == 0 or count >= len(labels):
        return np.arange(len(labels))
    return data.balanced_pick(labels, count, np.random.default_rng(stats.SEED))


@functools.cache
def _resamples(images: int) -> np.ndarray:
    return stats.resamples(images)


def judged(correct: np.ndarray, reference_correct: np.ndarray, agreement: float) -> dict:
    """Accuracy and drop from the reference on the same images, with their 95% intervals and
    McNemar's p-value, and the agreement given."""
    rows = _resamples(len(correct))
    return {"images": int(len(correct)), "accuracy": float(np.mean(correct)),
            "accuracy_ci95": stats.accuracy_interval(correct, rows),
            "accuracy_drop": round(float(np.mean(reference_correct) - np.mean(correct)) * 100, 2),
            "drop_ci95": stats.drop_interval(reference_correct, correct, rows),
            "mcnemar_p": stats.mcnemar_p(reference_correct, correct),
            "agreement": agreement, "error": None}


def entry(path: Path, runtime: runtimes.Runtime, x: np.ndarray, y: np.ndarray,
          native_predicted: np.ndarray, reference_correct: np.ndarray,
          contract: InputContract, latency_runs: int) -> dict:
    """One runtime's cell for one file, on the images given."""
    if not runtime.installed():
        return {"skipped": runtime.missing()}
    try:
        runner = runtimes.open_model(path, contract=contract, runtime=runtime.name)
        predicted = runtimes.predict(runner, x)
        if runtime.times_itself:
            extra = {"latency_ms": round(runner.ms_per_image, 4),
                     "arena_bytes": runner.arena_bytes}
        else:
            extra = {"latency_ms": round(time_latency(path, x, latency_runs, contract,
                                                      runtime.name), 4)}
    except EdgefireError as exc:
        return {"error": str(exc).removeprefix(f"{path}: ")}
    agreement = float(np.mean(predicted == native_predicted))
    return {**judged(predicted == y, reference_correct, agreement), **extra}


def native_cell(row: dict, images: int) -> dict:
    """The cell of a file's native runtime: what `row` measured there on every image."""
    measured = ("accuracy", "accuracy_ci95", "accuracy_drop", "drop_ci95", "mcnemar_p",
                "latency_ms")
    native = runtimes.runtimes_for(row["format"])[0].name
    return {native: {"images": images, **{k: row[k] for k in measured}, "agreement": 1.0,
                     "error": None}}


def matrix(path: Path, row: dict, predicted: np.ndarray, reference_predicted: np.ndarray,
           y: np.ndarray, x: np.ndarray, contract: InputContract, latency_runs: int,
           micro_images: int) -> dict:
    """Every runtime's cell for the file of `row` (measured natively as `predicted`, its
    comparison with the reference already in `row`)."""
    reference_correct = reference_predicted == y
    native, *others = runtimes.runtimes_for(row["format"])
    cells = native_cell(row, len(y))
    subset = balanced_subset(y, micro_images)
    for runtime in others:
        chosen = subset if runtime.subset else np.arange(len(y))
        cells[runtime.name] = entry(path, runtime, x[chosen], y[chosen], predicted[chosen],
                                    reference_correct[chosen], contract, latency_runs)
    return cells
