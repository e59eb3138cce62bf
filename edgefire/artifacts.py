"""The artifacts folder: atomic writes, stage metadata and `manifest.json` with hashes.

Nothing is ever written under its final name directly: a file is written beside it under a
temporary name and renamed into place, so a failed or killed stage leaves the previous good
file intact. The manifest lists every artifact with the stage that made it, its bytes,
sha256, inputs (by hash) and config; stages read their inputs from it instead of guessing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from edgefire import layout
from edgefire.errors import EdgefireError
from edgefire.version import VERSION

MANIFEST = layout.MANIFEST
SCHEMA = 1
_pending: list[tuple[Path, Path]] | None = None  # (temporary, final) renames of an output set


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_folder(folder: Path) -> Path:
    """Create the artifacts folder if needed and make sure it can be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgefireError(f"{folder}: cannot create artifacts folder ({exc.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise EdgefireError(f"{folder}: artifacts folder is not writable")
    return folder


def ensure_space(path: Path, needed: int) -> None:
    """One line before a write that would fill the disk: HDF5's writer crashes the process
    (SIGSEGV) on a full disk instead of raising, leaving its temporary file behind."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return  # the write itself will say what is wrong with the folder
    if free < needed:
        raise EdgefireError(f"{path}: No space left on device: writing it needs about "
                            f"{needed / 1e6:.1f} MB, {free / 1e6:.1f} MB are free")


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds.

    Inside `output_set`, the rename waits for the end of the set.
    """
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        if _pending is None:
            os.replace(tmp, path)
        else:
            _pending.append((tmp, path))
            tmp = None
    except OSError as exc:
        raise EdgefireError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()


@contextlib.contextmanager
def output_set():
    """Files written in the block are renamed into place together at its end, or not at all.

    A stage that fails while writing (a full disk, an error) keeps its previous outputs
    whole: never new files beside old ones. Nested sets join the outer one.
    """
    global _pending
    outer, _pending = _pending, []
    mine = _pending
    try:
        yield
        if outer is not None:
            outer.extend(mine)
            mine = []
            return
        try:
            for tmp, path in mine:
                os.replace(tmp, path)
        except OSError as exc:
            raise EdgefireError(f"cannot rename outputs into place ({exc.strerror or exc})"
                                ) from None
    finally:
        _pending = outer
        for tmp, _ in mine:
            with contextlib.suppress(OSError):
                tmp.unlink()


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path, what: str, stage: str | None = None) -> Record:
    """A stage record (of `stage`, the command that writes it): a JSON object whose missing keys
    are one line naming the file (a hand edit or another version), not a KeyError deep in a
    stage."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        check_folder_exists(path.parent)
        made_by = f" (run `edgefire {stage}` first)" if stage else ""
        raise EdgefireError(f"{path}: {what} not found{made_by}") from None
    except (OSError, ValueError) as exc:
        raise EdgefireError(f"{path}: {what} is unreadable ({exc})") from None
    if not isinstance(content, dict):
        raise EdgefireError(f"{path}: {what} is not a JSON object: {_rerun(stage)}")
    return Record(content, path, stage)


def check_folder_exists(folder: Path) -> None:
    """An artifacts folder a command reads must be there: said before any file in it."""
    if not folder.is_dir():
        raise EdgefireError(f"--artifacts {folder}: no such folder (build one with `edgefire "
                            "build`, or name the folder of an earlier build)")


def stage_record(folder: Path, stage: str, what: str, name: str | None = None) -> Record:
    """A stage's record (`train.json`..., or the file `name`), checked against the manifest
    first when it holds one: a hand-edited record is one line, never a wrong number or a
    traceback later."""
    path = folder / (name or layout.record(stage))
    if path.exists() and (folder / MANIFEST).exists():
        entry = load_manifest(folder)["artifacts"].get(path.name)
        if entry is not None:
            check_intact(folder, path.name, entry)
    return read_json(path, what, stage)


def _rerun(stage: str | None) -> str:
    return f"run `edgefire {stage}` again" if stage else "rebuild"


class Record(dict):
    """A stage record read from `path`: a missing key, or a value of the wrong kind where a
    table is expected, is an EdgefireError naming the file and the stage to rerun."""

    def __init__(self, content: dict, path: Path, stage: str | None):
        super().__init__(content)
        self.path, self.stage = path, stage

    def __getitem__(self, key):
        try:
            value = super().__getitem__(key)
        except KeyError:
            raise EdgefireError(f"{self.path}: has no {key!r} (edited, or from another "
                                f"version): {_rerun(self.stage)}") from None
        return Record(value, self.path, self.stage) if isinstance(value, dict) else value


# --- manifest ------------------------------------------------------------------------------


def load_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.exists():
        return {"schema": SCHEMA, "edgefire_version": VERSION, "artifacts": {},
                "stages": {}}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        if manifest.get("schema") == SCHEMA:
            _check_manifest(manifest)
    except (OSError, ValueError) as exc:
        raise EdgefireError(f"{path}: manifest is unreadable ({exc}): start over "
                            "with `edgefire build --force` or use a new --artifacts folder"
                            ) from None
    if manifest.get("schema") != SCHEMA:
        raise EdgefireError(f"{path}: artifacts folder has manifest schema "
                            f"{manifest.get('schema')!r}, this edgefire reads schema {SCHEMA}: "
                            "rebuild it with --force or use a new --artifacts folder")
    return manifest


# what each entry of a manifest holds, by key and type (the rest is informative)
ARTIFACT_ENTRY = {"stage": str, "bytes": int, "sha256": str, "inputs": dict}
STAGE_ENTRY = {"config": dict, "inputs": dict, "outputs": list}


def _check_manifest(manifest: dict) -> None:
    """ValueError naming the first entry that is not what edgefire writes (a hand edit)."""
    for table, shape in (("artifacts", ARTIFACT_ENTRY), ("stages", STAGE_ENTRY)):
        entries = manifest.get(table)
        if not isinstance(entries, dict):
            raise ValueError(f"{table!r} is not a table")
        for name, entry in entries.items():
            if not isinstance(entry, dict):
                raise ValueError(f"{table}[{name!r}] is not a table")
            for key, kind in shape.items():
                if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
                    raise ValueError(f"{table}[{name!r}][{key!r}] is not a {kind.__name__}")


def set_aside_manifest(folder: Path) -> Path | None:
    """Rename an unreadable or foreign-schema manifest out of the way (for `build --force`)."""
    try:
        load_manifest(folder)
        return None
    except EdgefireError:
        aside = folder / f"{MANIFEST}.unreadable"
        os.replace(folder / MANIFEST, aside)
        return aside


def record_stage(folder: Path, stage: str, outputs: list[Path], inputs: list[Path],
                 config: dict, details: dict | None = None, passed: bool = True,
                 made_from: dict[str, list[Path]] | None = None,
                 forget: tuple[str, ...] = ()) -> dict:
    """Record a finished stage and its output files (bytes, sha256, inputs by hash), and
    drop the stages named in `forget` with their artifacts (the files stay).

    Each output is recorded as made from the stage's inputs, or from the ones `made_from`
    names for it, so a file is blamed only for a change in what it was made from.
    `details` adds fields to named outputs' entries (for example their I/O tensor names);
    a stage recorded with `passed=False` (a missed gate) is never up to date.
    """
    manifest = load_manifest(folder)
    input_hashes = {p.name: manifest["artifacts"].get(p.name, {}).get("sha256") or sha256(p)
                    for p in inputs}
    for old in [n for n, a in manifest["artifacts"].items()
                if a["stage"] == stage or a["stage"] in forget]:
        del manifest["artifacts"][old]
    for gone in forget:
        manifest["stages"].pop(gone, None)
    names = [path.relative_to(folder).as_posix() for path in outputs]  # mcu/ files: mcu/x
    for name, path in zip(names, outputs, strict=True):
        manifest["artifacts"][name] = {
            "stage": stage, "path": name, "bytes": path.stat().st_size,
            "sha256": sha256(path), "config": config,
            "inputs": {p.name: input_hashes[p.name]
                       for p in (made_from or {}).get(name, inputs)},
            **(details or {}).get(name, {})}
    manifest["stages"][stage] = {"config": config, "inputs": input_hashes,
                                 "outputs": names, "passed": passed,
                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(folder / MANIFEST, manifest)
    return manifest


@contextlib.contextmanager
def created_folder(folder: Path):
    """Create the artifacts folder for a run; a failed run that created it and wrote nothing
    into it leaves no empty folder behind."""
    created = not folder.exists()
    ensure_folder(folder)
    try:
        yield folder
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        raise


def artifact_path(folder: Path, name: str, needed_by: str) -> Path:
    """The path of a recorded artifact whose bytes still match the manifest."""
    entry = load_manifest(folder)["artifacts"].get(name)
    path = folder / name
    if entry is None or not path.exists():
        raise EdgefireError(f"{path}: not found ({needed_by} needs it: run the stage that "
                            "makes it first)")
    check_intact(folder, name, entry)
    return path


def check_set(folder: Path, names: list[str], needed_by: str) -> None:
    """Every named file exists, matches the manifest, and was made from the current version
    of each file it was made from; otherwise one line naming the file and the stage to rerun.
    """
    check_folder_exists(folder)
    if not (folder / MANIFEST).exists():
        raise EdgefireError(f"{folder / MANIFEST}: missing, so nothing in {folder} can be "
                            "checked: rebuild with `edgefire build`")
    recorded = load_manifest(folder)["artifacts"]
    for name in names:
        entry = recorded.get(name)
        if entry is None:
            raise EdgefireError(f"{folder / name}: not recorded in the manifest ({needed_by} "
                                "needs it): rebuild with `edgefire build`")
        if not (folder / name).exists():
            raise EdgefireError(f"{folder / name}: missing ({needed_by} needs it): run "
                                f"`edgefire {entry['stage']}` again")
        check_intact(folder, name, entry)
        for parent, digest in entry["inputs"].items():
            if recorded.get(parent, {}).get("sha256") != digest:
                raise EdgefireError(f"{folder / name}: made from an older {parent}: run "
                                    f"`edgefire {entry['stage']}` again")


def check_intact(folder: Path, name: str, entry: dict) -> None:
    path = folder / name
    size = path.stat().st_size
    if size != entry["bytes"] or sha256(path) != entry["sha256"]:
        raise EdgefireError(f"{path}: bytes do not match the manifest ({size} B, expected "
                            f"{entry['bytes']} B with sha256 {entry['sha256'][:12]}...): the "
                            "file was truncated, edited or replaced: run "
                            f"`edgefire {entry['stage']}` again")


def stage_is_current(folder: Path, stage: str, inputs: list[Path], config: dict) -> bool:
    """True when the stage ran with this config on these exact inputs and its outputs are intact."""
    return why_stale(folder, stage, inputs, config) is None


def why_stale(folder: Path, stage: str, inputs: list[Path], config: dict) -> str | None:
    """Why the stage would run again (never ran, a setting changed, an input or an output
    changed), or None when it is up to date."""
    manifest = load_manifest(folder)
    record = manifest["stages"].get(stage)
    if record is None:
        return "it has not run here"
    if record["config"] != config:
        return "changed: " + ", ".join(setting_changes(record["config"], config))
    if not record.get("passed", True):
        return "its last run did not pass"
    try:
        current = {p.name: sha256(p) for p in inputs}
    except OSError as exc:
        return f"{exc.filename or 'an input'} cannot be read"
    for name in sorted(set(current) | set(record["inputs"])):
        if current.get(name) != record["inputs"].get(name):
            return f"its input {name} changed"
    for name in record["outputs"]:
        entry = manifest["artifacts"].get(name)
        path = folder / name
        if entry is None or not path.exists() or sha256(path) != entry["sha256"]:
            return f"its output {name} is missing or changed"
    return None


def setting_changes(before: dict, after: dict) -> list[str]:
    """`key: old -> new` for each recorded setting that differs."""
    def shown(settings: dict, key: str) -> str:  # a fingerprint's first characters tell
        text = json.dumps(settings[key]) if key in settings else "unset"
        return text if len(text) <= 40 else text[:37] + "..."

    return [f"{key} {shown(before, key)} -> {shown(after, key)}"
            for key in sorted(set(before) | set(after))
            if key not in before or key not in after or before[key] != after[key]]


def source_model(folder: Path) -> Path:
    """The float reference: the pruned model when it was made from the current trained one."""
    manifest = load_manifest(folder)["artifacts"]
    trained = manifest.get(layout.TRAINED)
    pruned = manifest.get(layout.PRUNED)
    if pruned and trained and pruned["inputs"].get(layout.TRAINED) == trained["sha256"]:
        return artifact_path(folder, layout.PRUNED, "quantize")
    return artifact_path(folder, layout.TRAINED, "quantize")


def write_results(out: Path, rows: list[dict], table: list[str], **extra) -> None:
    """A benchmark's results: its rows as JSON with the machine they ran on, its table as
    Markdown beside them (`.md`), and the table printed."""
    import platform

    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                     "python": platform.python_version(), **extra, "rows": rows})
    write_text(out.with_suffix(".md"), "\n".join(table) + "\n")
    print("\n".join(table))
