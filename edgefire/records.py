"""Typed records of what a stage wrote and later stages read (train.json, prune.json,
quantize.json, export.json) and verify's report.json.

Each value is stored once in its stage's record and checked when it is read: a hand-edited record,
or one from another version, is one line naming the file and the stage to rerun, never a
traceback or a wrong number later. Reports take the rest of the record (history, timings) as
it is, from a record's `rest`.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

from edgefire import artifacts, layout
from edgefire.checks import accepts, type_name
from edgefire.config import TrainConfig
from edgefire.contract import InputContract
from edgefire.errors import EdgefireError

# the training settings later stages use; the others are in the record for people to read
USED = ("data", "arch", "seed", "val_size", "label_smoothing", "batch_norm", "dropout")
# settings that records from before they existed do not hold, and what they meant then
ADDED = {"limit": None, "model": None, "arch_file": None, "teacher": None,
         "distill_weight": 0.9, "distill_temperature": 4.0, "mixup": 0.0,
         "cutout": 0, "flip_average": False}


@dataclass(frozen=True)
class GivenRecord:
    """The user's own model file a build started from (`--model`)."""

    file: Path
    sha256: str  # of the file as it was given
    file_format: str  # "keras" or "onnx"


@dataclass(frozen=True)
class TrainRecord:
    path: Path
    config: dict  # train's settings as recorded, each of TrainConfig's type
    classes: tuple[str, ...]
    contract: InputContract
    fingerprint: str  # of the data trained on
    given: GivenRecord | None  # the model file it started from, if the user gave one
    rest: artifacts.Record  # the whole record: history, timings, counts

    @property
    def arch(self) -> str:
        return self.config["arch"]

    @property
    def seed(self) -> int:
        return self.config["seed"]

    @property
    def source(self) -> str:
        """The data as given to `train` (a relative path is the build's folder's)."""
        return self.config["data"]

    @property
    def built_in(self) -> bool:
        """One of edgefire's architectures (not a given model or `--arch FILE.py:FUNCTION`)."""
        return self.config["model"] is None and self.config["arch_file"] is None


def train(folder: Path) -> TrainRecord:
    """The train stage's record in `folder`, checked (and against the manifest)."""
    record = artifacts.stage_record(folder, "train", "training metadata")
    classes = record["classes"]
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise _edited(record, "'classes' is not a list of class names")
    data = record["data"]
    if not isinstance(data, dict) or not isinstance(data.get("fingerprint"), str):
        raise _edited(record, "'data' has no fingerprint")
    return TrainRecord(record.path, _config(record), tuple(classes), contract_of(record),
                       data["fingerprint"], _given(record), record)


def _given(record: artifacts.Record) -> GivenRecord | None:
    given = record.get("given_model")
    if given is None:
        return None
    if not (isinstance(given, dict) and all(isinstance(given.get(key), str)
                                            for key in ("file", "sha256", "format"))):
        raise _edited(record, "'given_model' does not name the file, its sha256 and format")
    return GivenRecord(Path(given["file"]), given["sha256"], given["format"])


def _config(record: artifacts.Record) -> dict:
    config = record["config"]
    if not isinstance(config, dict):
        raise _edited(record, "'config' is not a table of settings")
    hints = typing.get_type_hints(TrainConfig)
    for key, value in config.items():
        if key not in hints:
            raise _edited(record, f"config has an unknown setting {key!r}")
        if not accepts(hints[key], value):
            raise _edited(record, f"config {key} is not {type_name(hints[key])}")
    for key in USED:
        config[key]  # noqa: B018 - a Record names the missing key and the stage to rerun
    return {**ADDED, **config}


def contract_of(record: dict) -> InputContract:
    """The input contract a train record holds; one that is not a contract is one line."""
    try:
        contract = InputContract.from_json(record.get("input"))
        if not 1 <= contract.size <= 4096 or len(contract.mean) != 3 or len(contract.std) != 3:
            raise ValueError(contract)
    except (KeyError, TypeError, ValueError, IndexError):
        raise EdgefireError("train.json: its input contract is not one edgefire wrote (edited?): "
                            "run `edgefire train` again") from None
    return contract


def _edited(record: artifacts.Record, what: str) -> EdgefireError:
    return EdgefireError(f"{record.path}: {what} (edited, or from another version): run "
                         f"`edgefire {record.stage}` again")


@dataclass(frozen=True)
class QuantizeRecord:
    path: Path
    artifact: str  # the quantized TFLite's file name
    mode: str
    precision: str
    sparsity: float
    calibration: tuple[int, ...]  # train-split indices of the calibration images (int8)
    rest: artifacts.Record  # fallback, layer error, tensors: for the report


def quantize(folder: Path) -> QuantizeRecord:
    """The quantize stage's record in `folder`, checked (and against the manifest)."""
    record = artifacts.stage_record(folder, "quantize", "quantize metadata")
    calibration = record["calibration"]
    indices = calibration["indices"] if isinstance(calibration, dict) else []
    if calibration is not None and not (isinstance(indices, list) and all(
            isinstance(i, int) and i >= 0 for i in indices)):
        raise _edited(record, "'calibration' is not a list of image indices")
    sparsity = record["sparsity"]
    if not isinstance(sparsity, int | float) or not 0 <= sparsity <= 1:
        raise _edited(record, "'sparsity' is not a fraction")
    return QuantizeRecord(record.path, _file_name(record, "artifact"),
                          _text(record, "mode"), _text(record, "precision"), float(sparsity),
                          tuple(indices), record)


@dataclass(frozen=True)
class ExportRecord:
    path: Path
    source: str  # the float reference's file name
    deployables: dict[str, str]  # file name -> precision
    labels: str
    mcu: tuple[str, ...]  # the firmware pack's files (`mcu/model_data.h`...), if any
    pack: dict  # what export measured for the pack (arena, operators), or why there is none


def export(folder: Path) -> ExportRecord:
    """The export stage's record in `folder`, checked (and against the manifest)."""
    record = artifacts.stage_record(folder, "export", "export metadata")
    entries = record["deployables"]
    if not isinstance(entries, dict) or not all(
            _plain(name) and isinstance(entry, dict) and isinstance(entry.get("precision"), str)
            for name, entry in entries.items()):
        raise _edited(record, "'deployables' is not a table of files and their precisions")
    pack = record.get("mcu") or {}  # builds before the pack have none
    files = pack.get("files", []) if isinstance(pack, dict) else None
    if not isinstance(files, list) or not all(_in_pack(name) for name in files):
        raise _edited(record, "'mcu' does not list the firmware pack's files")
    return ExportRecord(record.path, _file_name(record, "source"),
                        {name: entry["precision"] for name, entry in entries.items()},
                        _file_name(record, "labels"), tuple(files), dict(pack))


def _in_pack(name) -> bool:
    """`mcu/<file name>`: a file of the firmware pack, never a path that leads elsewhere."""
    folder, _, file = name.partition("/") if isinstance(name, str) else ("", "", "")
    return folder == layout.MCU and _plain(file)


def _text(record: artifacts.Record, key: str) -> str:
    if not isinstance(record[key], str):
        raise _edited(record, f"{key!r} is not text")
    return record[key]


def _file_name(record: artifacts.Record, key: str) -> str:
    """A file name in the artifacts folder: never a path that leads elsewhere."""
    if not _plain(record[key]):
        raise _edited(record, f"{key!r} is not a file name in its folder")
    return record[key]


def _plain(name) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name \
        and "\\" not in name


@dataclass(frozen=True)
class PruneRecord:
    path: Path
    budget: int | None  # the byte budget (`--target-bytes`) prune was given, if any
    parameters: int  # of the pruned model
    multiply_accumulates: int | None  # of the pruned model (records before it: None)
    rest: artifacts.Record  # history, sparsity, channels: for people and the report


def prune(folder: Path) -> PruneRecord:
    """The prune stage's record in `folder`, checked (and against the manifest)."""
    record = artifacts.stage_record(folder, "prune", "prune metadata")
    tables = record["config"], record["parameters"], record.get("multiply_accumulates") or {}
    if not all(isinstance(table, dict) for table in tables):
        raise _edited(record, "'config', 'parameters' or 'multiply_accumulates' is not a table")
    budget = tables[0].get("target_bytes")
    if budget is not None and not _count(budget):
        raise _edited(record, "'target_bytes' is not a byte count")
    parameters, macs = tables[1].get("after"), tables[2].get("after")
    if not _count(parameters) or not (macs is None or _count(macs)):
        raise _edited(record, "the pruned model's parameters or multiply-accumulates are "
                              "not counts")
    return PruneRecord(record.path, budget, parameters, macs, record)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class ReportedFile:
    """One file's row of verify's report: what it is and what its native runtime measured."""

    name: str
    path: str  # relative to the build's folder
    file_format: str
    precision: str
    bytes: int
    accuracy: float
    accuracy_ci95: tuple[float, float] | None  # None in reports from before the interval
    accuracy_drop: float | None  # points below the reference, on the same images
    given: bool  # the user's own model file, as it was given
    runtimes: dict  # runtime name -> its cell (accuracy, latency; tflite-micro's arena)


@dataclass(frozen=True)
class ReportRecord:
    path: Path
    reference: str  # the float reference's file name
    parameters: int | None  # of the reference model (reports before it: None)
    files: tuple[ReportedFile, ...]
    rest: artifacts.Record  # gates, classes, confusion: for people

    def file(self, file_format: str, precision: str) -> ReportedFile | None:
        return next((f for f in self.files
                     if (f.file_format, f.precision) == (file_format, precision)), None)

    def named(self, name: str) -> ReportedFile | None:
        return next((f for f in self.files if f.name == name), None)


def report(folder: Path) -> ReportRecord:
    """verify's report.json in `folder`, checked (and against the manifest). A reader that
    takes its numbers as true checks first that its files are unchanged since
    (`artifacts.check_set`)."""
    record = artifacts.stage_record(folder, "verify", "report", layout.REPORT_JSON)
    rows = record["artifacts"]
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise _edited(record, "'artifacts' is not a list of measured files")
    parameters = record.get("parameters")
    if parameters is not None and not _count(parameters):
        raise _edited(record, "'parameters' is not a count")
    return ReportRecord(record.path, _file_name(record, "reference"), parameters,
                        tuple(_reported(artifacts.Record(r, record.path, "verify"))
                              for r in rows), record)


def _reported(row: artifacts.Record) -> ReportedFile:
    interval = row.get("accuracy_ci95")
    runtimes = row.get("runtimes") or {}
    if not (_count(row["bytes"]) and _fraction(row["accuracy"]) and isinstance(runtimes, dict)
            and (interval is None or (isinstance(interval, list) and len(interval) == 2
                                      and all(_fraction(v) for v in interval)))):
        raise _edited(row, f"the row of {row['name']!r} does not hold its bytes, accuracy "
                           "and interval")
    return ReportedFile(_file_name(row, "name"), _text(row, "path"), _text(row, "format"),
                        _text(row, "precision"), row["bytes"], float(row["accuracy"]),
                        tuple(interval) if interval else None, _points(row.get("accuracy_drop")),
                        bool(row.get("given")),
                        runtimes)


def _points(value) -> float | None:
    return float(value) if _number(value) else None


def _fraction(value) -> bool:
    return _number(value) and 0 <= value <= 1


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
