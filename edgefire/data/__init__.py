"""Data sources: Keras's CIFAR-10 download, the python archive or folder, an image-folder tree.

Every source ends as uint8 NHWC arrays at the build's input size, integer labels and class
names (`Dataset`). Images of any size and mode are decoded with Pillow, turned upright
(EXIF), converted to RGB and resized by the input contract's resize (`contract.resize`).
Decoded arrays are cached, keyed by the source's path, sizes and modification times and
the input size.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgefire.contract import DEFAULT_SIZE, resize
from edgefire.errors import EdgefireError

if TYPE_CHECKING:
    from edgefire.records import TrainRecord

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CACHE_VERSION = "2"
KERAS_CIFAR10_CACHE = Path.home() / ".keras" / "datasets" / "cifar-10-batches-py"


@dataclass(frozen=True)
class Dataset:
    """A whole source: train and test images (uint8 NHWC), labels and class names."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    source: str
    fingerprint: str
    x_val: np.ndarray | None = None  # a val/ folder of an image-folder source, when present
    y_val: np.ndarray | None = None


@dataclass(frozen=True)
class Splits:
    """Training, validation (carved out of train) and test images with their indices."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    train_indices: np.ndarray
    val_indices: np.ndarray
    classes: tuple[str, ...]


def load(source: str, size: int = DEFAULT_SIZE) -> Dataset:
    """Load a data source by name or path at size x size, from the cache when it is fresh."""
    check_exists(source)
    if source == "cifar10":
        return _load_keras_cifar10(size)
    path = Path(source).expanduser()
    return _cached(path, size, lambda: _load_path(path, size))


def check_exists(source: str) -> None:
    """A data path that is not there, said before anything is imported or written."""
    path = Path(source).expanduser()
    if source != "cifar10" and not path.exists():
        raise EdgefireError(f"{path}: data source does not exist (use 'cifar10', a "
                            "cifar-10-python.tar.gz, a cifar-10-batches-py folder or an "
                            "image-folder root with train/ and test/)")


def check_apart(source: str, folder: Path) -> None:
    """Nothing is ever written into the user's data: the artifacts folder may not lie inside
    the data source, nor the data inside the artifacts folder."""
    if source == "cifar10":
        return
    data_path, out = Path(source).expanduser().resolve(), folder.expanduser().resolve()
    if out == data_path or data_path in out.parents:
        raise EdgefireError(f"--artifacts {folder} is inside the data source {source}: "
                            "edgefire never writes into your data (choose a folder outside it)")
    if out in data_path.parents:
        raise EdgefireError(f"the data source {source} is inside --artifacts {folder}: keep "
                            "the data outside the folder edgefire writes")


def recorded_source(trained: TrainRecord, override: str | None = None) -> str:
    """The data a build trained on: `override`, or the source train.json records as it was
    given (a relative path is taken from the folder the build ran in)."""
    source = override or trained.source
    if override is None and source != "cifar10" and not Path(source).expanduser().exists():
        raise EdgefireError(f"the build's data {source} is not found from {Path.cwd()} (a "
                            "relative path is the folder the build ran in): run from there or "
                            "pass --data PATH")
    return source


def of_build(trained: TrainRecord, override: str | None = None) -> tuple[Dataset, Splits]:
    """The dataset and splits a build trained on (its source, input size, seed and limit)."""
    config = trained.config
    dataset = load(recorded_source(trained, override), trained.contract.size)
    return dataset, split(dataset, config["val_size"], config["seed"], config["limit"])


def _resized(dataset: Dataset, size: int) -> Dataset:
    """A 32x32 CIFAR-10 source at the build's size (the contract's resize)."""
    if size == dataset.x_train.shape[1]:
        return dataset
    check_memory(len(dataset.y_train) + len(dataset.y_test), size, Path(dataset.source))
    return replace(dataset, x_train=_resize_all(dataset.x_train, size),
                   x_test=_resize_all(dataset.x_test, size))


def _resize_all(images: np.ndarray, size: int) -> np.ndarray:
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)  # one copy, filled in place
    for i, image in enumerate(images):
        out[i] = resize(image, size)
    return out


def _load_path(path: Path, size: int) -> Dataset:
    if path.is_file() and (path.name.endswith((".tar.gz", ".tgz")) or tarfile.is_tarfile(path)):
        return _resized(_load_cifar_archive(path), size)
    if path.is_dir() and (path / "data_batch_1").exists():
        return _resized(_load_cifar_folder(path), size)
    if path.is_dir() and ((path / "train").exists() or (path / "test").exists()):
        return _load_image_folder(path, size)
    raise EdgefireError(f"{path}: not a recognised data source (expected a "
                        "cifar-10-python.tar.gz, a cifar-10-batches-py folder, or a folder "
                        "holding train/<class>/* and test/<class>/*)")


# --- cache -------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where decoded arrays are kept ($EDGEFIRE_CACHE, else ~/.cache/edgefire)."""
    return Path(os.environ.get("EDGEFIRE_CACHE", Path.home() / ".cache" / "edgefire"))


def _entries(path: Path) -> list[Path]:
    """The source and what lies up to three levels in it (splits, classes, images)."""
    entries = [path]
    if path.is_dir():
        for sub in sorted(path.iterdir()):
            entries.append(sub)
            if sub.is_dir():
                for inner in sorted(sub.iterdir()):
                    entries.append(inner)
                    if inner.is_dir():
                        entries.extend(sorted(inner.iterdir()))
    return entries


def _stats(path: Path) -> list[str]:
    """Name relative to the source, size and modification time of each entry."""
    parts = []
    for entry in _entries(path):
        try:
            stat = entry.stat()
        except OSError as exc:
            reason = ("a broken symbolic link (its target is missing, or it loops)"
                      if entry.is_symlink() else f"cannot be read ({exc.strerror})")
            raise EdgefireError(f"{entry}: {reason}") from None
        name = entry.relative_to(path).as_posix() if entry != path else ""
        parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return parts


def _fingerprint(path: Path, size: int) -> str:
    """The cache key: the source's path and input size, and its files' sizes and times."""
    parts = [CACHE_VERSION, str(path.resolve()), str(size), *_stats(path)]
    return _digest(parts)


def _digest(parts: list[str]) -> str:
    """sha256 of the names and stats; a file name that is not UTF-8 counts by its bytes."""
    return hashlib.sha256("|".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def source_fingerprint(source: str) -> str:
    """What the data is, for the manifest: every file's name (relative to the source) and
    content; not where it lies or when it was copied, so a moved folder, or the same data on
    another machine, is the same data. The content's digest is kept in the cache under the
    files' names, sizes and times, so only new or touched data is read again. Keras's
    CIFAR-10 is its cache folder ('cifar10' until it is downloaded)."""
    path = Path(source).expanduser() if source != "cifar10" else KERAS_CIFAR10_CACHE
    if not path.exists():
        return source
    try:
        known = cache_dir() / f"content-{_digest([str(path.resolve()), *_stats(path)])}.txt"
        if known.exists():
            return known.read_text(encoding="utf-8").strip()
        digest = _digest(_contents(path))
    except OSError as exc:
        raise EdgefireError(f"{path}: cannot read the data source ({exc.strerror})") from None
    with contextlib.suppress(OSError):  # best effort, like the decoded arrays
        known.parent.mkdir(parents=True, exist_ok=True)
        known.write_text(digest, encoding="utf-8")
    return digest


def _contents(path: Path) -> list[str]:
    """Name relative to the source and sha256 of each file."""
    parts = []
    for entry in _entries(path):
        if entry.is_file():
            name = entry.relative_to(path).as_posix() if entry != path else ""
            parts.append(f"{name}:{hashlib.sha256(entry.read_bytes()).hexdigest()}")
    return parts


def _cached(path: Path, size: int, loader) -> Dataset:
    fingerprint = _fingerprint(path, size)
    cache_file = cache_dir() / f"{fingerprint}.npz"
    if cache_file.exists():
        try:
            with np.load(cache_file) as npz:
                val = (npz["x_val"], npz["y_val"]) if "x_val" in npz.files else (None, None)
                return Dataset(npz["x_train"], npz["y_train"], npz["x_test"], npz["y_test"],
                               tuple(str(c) for c in npz["classes"]), str(path), fingerprint,
                               *val)
        except Exception:  # numpy and zipfile raise many types for a damaged file
            print(f"  {cache_file}: damaged cache entry, decoding {path} again", flush=True)
    data = replace(loader(), source=str(path), fingerprint=fingerprint)
    _write_cache(cache_file, data)
    return data


def _write_cache(cache_file: Path, data: Dataset) -> None:
    """Best effort: a cache that cannot be written only costs the next run a decode."""
    arrays = {"x_train": data.x_train, "y_train": data.y_train, "x_test": data.x_test,
              "y_test": data.y_test, "classes": np.array(data.classes)}
    if data.x_val is not None:
        arrays.update(x_val=data.x_val, y_val=data.y_val)
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, cache_file)
    except OSError:
        pass


# --- CIFAR-10 python format ----------------------------------------------------------------


def _load_keras_cifar10(size: int) -> Dataset:
    """Keras's download and cache of the CIFAR-10 python archive (~/.keras/datasets)."""
    from edgefire.tfenv import keras

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # Keras prints "Downloading data"
            folder = keras().utils.get_file("cifar-10-batches-py", origin=CIFAR10_URL,
                                            untar=True)
    except Exception:  # urllib raises many types; all mean the same to the user
        raise EdgefireError(
            f"could not download CIFAR-10 from {CIFAR10_URL} (no network?): pass a local copy "
            "with --data PATH (a cifar-10-python.tar.gz, its cifar-10-batches-py folder or an "
            "image-folder root)") from None
    return _cached(Path(folder), size, lambda: _resized(_load_cifar_folder(Path(folder)), size))


# the only globals a CIFAR-10 python batch names: NumPy's array reconstruction (NumPy 1 and 2)
CIFAR_PICKLE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"),
                        ("numpy._core.multiarray", "_reconstruct"),
                        ("numpy", "ndarray"), ("numpy", "dtype")}


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _CifarUnpickler(pickle.Unpickler):
    """Reads dicts, lists, bytes, numbers and NumPy arrays; refuses any other global, so a
    planted batch cannot name a function to call (pickle's way of running code)."""

    def find_class(self, module: str, name: str):
        if (module, name) in CIFAR_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise _RefusedGlobal(f"{module}.{name}")


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        batch = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _RefusedGlobal as exc:
        raise EdgefireError(f"{where}: refused: the pickle asks for {exc}, which a CIFAR-10 "
                            "batch never holds (code that would run if read)") from None
    except Exception:
        raise EdgefireError(f"{where}: corrupt CIFAR-10 batch (not a readable pickle)") from None
    if not isinstance(batch, dict):
        raise EdgefireError(f"{where}: corrupt CIFAR-10 batch (not a dict)")
    return batch


def _batch_arrays(batch: dict, where: str, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch's images and labels, each checked: one label per image, every one a class."""
    try:
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (KeyError, ValueError, TypeError, OverflowError):
        raise EdgefireError(f"{where}: corrupt CIFAR-10 batch (no 3x32x32 'data' and "
                            "'labels')") from None
    if labels.ndim != 1 or len(labels) != len(images):
        raise EdgefireError(f"{where}: corrupt CIFAR-10 batch ({labels.size} labels for "
                            f"{len(images)} images)")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise EdgefireError(f"{where}: corrupt CIFAR-10 batch (a label outside 0-{classes - 1})")
    return images.transpose(0, 2, 3, 1), labels


def _label_names(meta: dict, where: str) -> tuple[str, ...]:
    """The class names of batches.meta: a list of UTF-8 names, each fit for one line."""
    names = meta.get(b"label_names")
    try:
        classes = tuple(name.decode("utf-8") for name in names)
    except (TypeError, AttributeError, UnicodeDecodeError):
        raise EdgefireError(f"{where}: corrupt batches.meta ('label_names' is not a list of "
                            "UTF-8 names)") from None
    if len(classes) < 2 or any(not name or not name.isprintable() for name in classes):
        raise EdgefireError(f"{where}: corrupt batches.meta (fewer than 2 class names, or an "
                            "empty one, or one with a newline or control character)")
    return classes


def _from_batches(read, where: str) -> Dataset:
    """Assemble a Dataset from a `read(name) -> bytes` over the batches-py file names."""
    classes = _label_names(_unpickle(read("batches.meta"), f"{where}/batches.meta"),
                           f"{where}/batches.meta")
    train = [_batch_arrays(_unpickle(read(f"data_batch_{i}"), f"{where}/data_batch_{i}"),
                           f"{where}/data_batch_{i}", len(classes)) for i in range(1, 6)]
    x_test, y_test = _batch_arrays(_unpickle(read("test_batch"), f"{where}/test_batch"),
                                   f"{where}/test_batch", len(classes))
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return Dataset(x_train, y_train, x_test, y_test, classes, where, "")


def _load_cifar_folder(folder: Path) -> Dataset:
    def read(name: str) -> bytes:
        file = folder / name
        if not file.exists():
            raise EdgefireError(f"{file}: missing from the cifar-10-batches-py folder")
        return file.read_bytes()

    return _from_batches(read, str(folder))


def _load_cifar_archive(archive: Path) -> Dataset:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

            def read(name: str) -> bytes:
                if name not in members:
                    raise EdgefireError(f"{archive}: archive has no {name} "
                                        "(not a cifar-10-python.tar.gz)")
                return tar.extractfile(members[name]).read()

            return _from_batches(read, str(archive))
    except (tarfile.TarError, EOFError, OSError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip("- ")
        raise EdgefireError(f"{archive}: corrupt or truncated archive ({reason})") from None


# --- image folders -------------------------------------------------------------------------


def hidden(name: str) -> bool:
    """Names no dataset means: dot-names (.DS_Store, .ipynb_checkpoints) and Thumbs.db."""
    return name.startswith(".") or name.lower() == "thumbs.db"


def _visible(folder: Path) -> list[Path]:
    """Entries of a folder, without hidden ones."""
    return sorted(p for p in folder.iterdir() if not hidden(p.name))


def _class_folders(split: Path) -> list[str]:
    if not split.is_dir():
        raise EdgefireError(f"{split}: folder is missing (an image-folder root needs "
                            "train/<class>/* and test/<class>/*)")
    classes = [p.name for p in _visible(split) if p.is_dir()]
    if not classes:
        raise EdgefireError(f"{split}: folder is empty (expected one sub-folder per class)")
    for name in classes:
        if not name.isascii() and not _utf8(name):
            raise EdgefireError(f"{str(split / name)!r}: class folder name is not UTF-8, which "
                                "labels.txt and the TFLite metadata are: rename the folder")
        if any(not ch.isprintable() for ch in name):
            raise EdgefireError(f"{str(split / name)!r}: class name has a newline or control "
                                "character, so it cannot be one line of labels.txt: rename "
                                "the folder")
    return classes


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes the file system could not decode (surrogate escapes)
        return False
    return True


def read_image(file: Path, size: int) -> np.ndarray:
    """An image file of any size and mode as size x size RGB uint8, the way an app sees it:
    EXIF orientation applied, converted to RGB (16-bit scaled to 8), resized by the contract.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            image.seek(0)  # GIF, TIFF: the first frame
            image = ImageOps.exif_transpose(image)
            return resize(_rgb(image), size)
    except Image.DecompressionBombError as exc:  # Pillow's guard against huge pixel counts
        raise EdgefireError(f"{file}: image too large to decode safely ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise EdgefireError(f"{file}: unreadable or corrupt image ({exc})") from None


def _rgb(image) -> np.ndarray:
    """RGB uint8 pixels from any Pillow mode (L, LA, P, RGBA, CMYK, I;16, I, F...)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        gray = np.clip(np.rint(pixels * 255.0 / top), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA").convert("RGB")  # transparent pixels keep their colour
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _image_files(folder: Path, skipped: dict) -> list[Path]:
    """The image files of a class folder; other visible files are counted in `skipped`."""
    files = []
    for path in _visible(folder):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            files.append(path)
        elif path.is_file():
            skipped[path.suffix.lower() or "(no suffix)"] = \
                skipped.get(path.suffix.lower() or "(no suffix)", 0) + 1
    return files


def _load_split(split: Path, classes: list[str], size: int, skipped: dict
                ) -> tuple[np.ndarray, np.ndarray]:
    files, labels = [], []
    for index, name in enumerate(classes):
        images = _image_files(split / name, skipped)
        if not images:
            raise EdgefireError(f"{split / name}: class has no images "
                                f"({', '.join(sorted(s[1:] for s in IMAGE_SUFFIXES))})")
        files.extend(images)
        labels.extend([index] * len(images))
    check_memory(len(files), size, split)
    return decode_all(files, size, split.name), np.asarray(labels, dtype=np.int64)


def decode_all(files: list[Path], size: int, what: str) -> np.ndarray:
    """Decode files in parallel into one preallocated array, with a progress bar and ETA."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    out = np.empty((len(files), size, size, 3), dtype=np.uint8)

    def decode(i: int) -> None:
        out[i] = read_image(files[i], size)

    columns = (f"  decoding {what}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    console = Console(stderr=True)
    with Progress(*columns, transient=True, console=console,
                  disable=not console.is_terminal) as progress, \
            ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        task = progress.add_task(what, total=len(files))
        for _ in pool.map(decode, range(len(files))):
            progress.advance(task)
    return out


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), if known."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(images: int, size: int, where: Path) -> None:
    """Refuse before decoding when the decoded arrays cannot fit in memory."""
    need = images * size * size * 3
    free = available_memory()
    if free is not None and need > free:
        raise EdgefireError(f"{where}: {images:,} images at {size}x{size} need "
                            f"{need / 1e9:.1f} GB decoded, only {free / 1e9:.1f} GB of memory "
                            "is available (use a smaller --image-size or fewer images)")


def _load_image_folder(root: Path, size: int) -> Dataset:
    classes = _class_folders(root / "train")
    splits = ["test"] + (["val"] if (root / "val").is_dir() else [])
    for name in splits:
        other = _class_folders(root / name)
        if other != classes:
            only_train = sorted(set(classes) - set(other))
            only_other = sorted(set(other) - set(classes))
            raise EdgefireError(f"{root}: class folders differ between train and {name} "
                                f"(only in train: {only_train or '-'}; only in {name}: "
                                f"{only_other or '-'})")
    if len(classes) < 2:
        raise EdgefireError(f"{root / 'train'}: only one class ({classes[0]!r}); a classifier "
                            "needs at least 2 class folders")
    skipped: dict[str, int] = {}
    x_train, y_train = _load_split(root / "train", classes, size, skipped)
    counts = np.bincount(y_train, minlength=len(classes))
    for name, count in zip(classes, counts, strict=True):
        if count < 2:
            raise EdgefireError(f"{root / 'train' / name}: class has {count} training image; "
                                "at least 2 are needed (one may go to validation)")
    x_test, y_test = _load_split(root / "test", classes, size, skipped)
    x_val = y_val = None
    if "val" in splits:
        x_val, y_val = _load_split(root / "val", classes, size, skipped)
    if skipped:
        listed = ", ".join(f"{n} {suffix}" for suffix, n in sorted(skipped.items()))
        print(f"  skipped {sum(skipped.values())} files that are not images ({listed})",
              flush=True)
    return Dataset(x_train, y_train, x_test, y_test, tuple(classes), str(root), "", x_val, y_val)


# --- splits --------------------------------------------------------------------------------


def balanced_pick(labels: np.ndarray, count: int, rng: np.random.Generator,
                  leave: int = 0) -> np.ndarray:
    """Indices of `count` items, as equal a share of every class as the classes allow,
    leaving at least `leave` items of every class unpicked."""
    classes = np.unique(labels)
    per_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    per_class = {c: v[:max(len(v) - leave, 0)] for c, v in per_class.items()}
    picked: list[int] = []
    rank = 0
    while len(picked) < count:
        for c in classes:
            if rank < len(per_class[c]) and len(picked) < count:
                picked.append(int(per_class[c][rank]))
        rank += 1
        if rank > max(len(v) for v in per_class.values()):
            break
    return np.sort(np.asarray(picked, dtype=np.int64))


def split(data: Dataset, val_size: int, seed: int, limit: int | None = None) -> Splits:
    """The training, validation and test splits; optionally a class-balanced subset of train.

    Validation is the source's val/ folder when it has one; otherwise a seeded,
    class-balanced carve-out of train of at most a tenth of it (so tiny datasets keep most
    images for training) that leaves every class at least one training image. The test
    split is returned untouched.
    """
    rng = np.random.default_rng(seed)
    if limit is not None and limit < len(data.classes):
        raise EdgefireError(f"--limit {limit} is fewer than the {len(data.classes)} classes: "
                            "every class needs at least one training image")
    if data.x_val is not None:
        val_indices = np.zeros(0, dtype=np.int64)
        x_val, y_val = data.x_val, data.y_val
    else:
        n_val = max(min(val_size, len(data.y_train) // 10), len(data.classes))
        val_indices = balanced_pick(data.y_train, n_val, rng, leave=1)
        x_val, y_val = data.x_train[val_indices], data.y_train[val_indices]
    rest = np.setdiff1d(np.arange(len(data.y_train)), val_indices)
    if limit is not None and limit < len(rest):
        rest = rest[balanced_pick(data.y_train[rest], limit, rng)]
    return Splits(data.x_train[rest], data.y_train[rest], x_val, y_val, data.x_test,
                  data.y_test, rest, val_indices, data.classes)


def class_counts(splits: Splits) -> dict:
    """Images per class in each split, by class name."""
    def count(labels):
        return {name: int(n) for name, n in
                zip(splits.classes, np.bincount(labels, minlength=len(splits.classes)),
                    strict=True)}

    return {"train": count(splits.y_train), "val": count(splits.y_val),
            "test": count(splits.y_test)}
