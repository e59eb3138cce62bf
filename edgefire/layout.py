"""The artifacts folder's file names, in one place: every module asks here for a name.

A deployable file is named for what it is, `<arch>_<precision>.<format>`
(`squeezenet_int8.tflite`); each stage records its metadata as `<stage>.json` and its
resumable checkpoint as `<stage>_checkpoint.h5` / `.json`.
"""

from __future__ import annotations

MANIFEST = "manifest.json"
TRAINED = "trained.h5"  # the float model `train` makes (batch norm folded)
PRUNED = "pruned.h5"  # the pruned float model
HISTORY = "history.json"
TRAINING_CURVES = "training.png"
LABELS = "labels.txt"
REPORT_JSON, REPORT_MD, REPORT_PNG = "report.json", "report.md", "report.png"
CONFUSION_PNG = "confusion.png"
BUILD_LOG = "build.json"
MCU = "mcu"  # the firmware pack's folder
NPU = "npu"  # Vela's compiled model and summary (`verify --npu`)


def record(stage: str) -> str:
    """A stage's metadata file: train.json, prune.json, quantize.json, export.json."""
    return f"{stage}.json"


def checkpoint(stage: str, suffix: str) -> str:
    """A stage's checkpoint: `.h5` weights and `.json` state."""
    return f"{stage}_checkpoint{suffix}"


def deployable(arch: str, precision: str, file_format: str) -> str:
    """A deployable file's name, for example squeezenet_int8.tflite."""
    return f"{arch}_{precision}.{file_format}"
