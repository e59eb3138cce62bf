"""CIFAR-10-style sources: Keras's download, the python archive or folder, an image-folder tree.

Every source ends as uint8 NHWC arrays, integer labels and class names (`Dataset`).
Decoded arrays are cached, keyed by the source's path, size and modification time.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefire.errors import EdgefireError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
IMAGE_SIZE = (32, 32)
CACHE_VERSION = "1"


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


def load(source: str) -> Dataset:
    """Load a data source by name or path, from the decoded-array cache when it is fresh."""
    if source == "cifar10":
        return _load_keras_cifar10()
    path = Path(source).expanduser()
    if not path.exists():
        raise EdgefireError(f"{path}: data source does not exist (use 'cifar10', a "
                            "cifar-10-python.tar.gz, a cifar-10-batches-py folder or an "
                            "image-folder root with train/ and test/)")
    return _cached(path, lambda: _load_path(path))


def _load_path(path: Path) -> Dataset:
    if path.is_file() and (path.name.endswith((".tar.gz", ".tgz")) or tarfile.is_tarfile(path)):
        return _load_cifar_archive(path)
    if path.is_dir() and (path / "data_batch_1").exists():
        return _load_cifar_folder(path)
    if path.is_dir() and ((path / "train").exists() or (path / "test").exists()):
        return _load_image_folder(path)
    raise EdgefireError(f"{path}: not a recognised data source (expected a "
                        "cifar-10-python.tar.gz, a cifar-10-batches-py folder, or a folder "
                        "holding train/<class>/* and test/<class>/*)")


# --- cache -------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where decoded arrays are kept ($EDGEFIRE_CACHE, else ~/.cache/edgefire)."""
    return Path(os.environ.get("EDGEFIRE_CACHE", Path.home() / ".cache" / "edgefire"))


def _fingerprint(path: Path) -> str:
    """Path, size and modification time of the source and of the folders directly in it."""
    parts = [CACHE_VERSION, str(path.resolve())]
    entries = [path]
    if path.is_dir():
        for sub in sorted(path.iterdir()):
            entries.append(sub)
            if sub.is_dir():
                entries.extend(sorted(sub.iterdir()))
    for entry in entries:
        stat = entry.stat()
        parts.append(f"{entry.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _cached(path: Path, loader) -> Dataset:
    fingerprint = _fingerprint(path)
    cache_file = cache_dir() / f"{fingerprint}.npz"
    if cache_file.exists():
        try:
            with np.load(cache_file) as npz:
                return Dataset(npz["x_train"], npz["y_train"], npz["x_test"], npz["y_test"],
                               tuple(str(c) for c in npz["classes"]), str(path), fingerprint)
        except Exception:  # numpy and zipfile raise many types for a damaged file
            print(f"  {cache_file}: damaged cache entry, decoding {path} again", flush=True)
    data = loader()
    data = Dataset(data.x_train, data.y_train, data.x_test, data.y_test, data.classes,
                   str(path), fingerprint)
    _write_cache(cache_file, data)
    return data


def _write_cache(cache_file: Path, data: Dataset) -> None:
    """Best effort: a cache that cannot be written only costs the next run a decode."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test,
                 y_test=data.y_test, classes=np.array(data.classes))
        os.replace(tmp, cache_file)
    except OSError:
        pass


# --- CIFAR-10 python format ----------------------------------------------------------------


def _load_keras_cifar10() -> Dataset:
    """Keras's download and cache of the CIFAR-10 python archive (~/.keras/datasets)."""
    from edgefire.tfenv import keras

    try:
        folder = keras().utils.get_file("cifar-10-batches-py", origin=CIFAR10_URL, untar=True)
    except Exception as exc:  # urllib raises many types; all mean the same to the user
        raise EdgefireError(
            f"could not download CIFAR-10 from {CIFAR10_URL} (no network?): pass a local copy "
            "with --data PATH (a cifar-10-python.tar.gz, its cifar-10-batches-py folder or an "
            f"image-folder root) [{type(exc).__name__}]") from None
    return _cached(Path(folder), lambda: _load_cifar_folder(Path(folder)))


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        return pickle.loads(raw, encoding="bytes")
    except Exception:
        raise EdgefireError(f"{where}: corrupt CIFAR-10 batch (not a readable pickle)") from None


def _batch_arrays(batch: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (KeyError, ValueError):
        raise EdgefireError(f"{where}: corrupt CIFAR-10 batch (no 3x32x32 'data' and "
                            "'labels')") from None
    return images.transpose(0, 2, 3, 1), labels


def _from_batches(read, where: str) -> Dataset:
    """Assemble a Dataset from a `read(name) -> bytes` over the batches-py file names."""
    meta = _unpickle(read("batches.meta"), f"{where}/batches.meta")
    classes = tuple(name.decode() for name in meta[b"label_names"])
    train = [_batch_arrays(_unpickle(read(f"data_batch_{i}"), f"{where}/data_batch_{i}"),
                           f"{where}/data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = _batch_arrays(_unpickle(read("test_batch"), f"{where}/test_batch"),
                                   f"{where}/test_batch")
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


def _class_folders(split: Path) -> list[str]:
    if not split.is_dir():
        raise EdgefireError(f"{split}: folder is missing (an image-folder root needs "
                            "train/<class>/* and test/<class>/*)")
    classes = sorted(p.name for p in split.iterdir() if p.is_dir())
    if not classes:
        raise EdgefireError(f"{split}: folder is empty (expected one sub-folder per class)")
    return classes


def _read_image(file: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            image.load()
            if image.size != IMAGE_SIZE:
                raise EdgefireError(f"{file}: image is {image.size[0]}x{image.size[1]}, "
                                    "expected 32x32 (resize your dataset first)")
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise EdgefireError(f"{file}: unreadable or corrupt image ({exc})") from None


def _load_split(split: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    files, labels = [], []
    for index, name in enumerate(classes):
        images = sorted(p for p in (split / name).iterdir()
                        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            raise EdgefireError(f"{split / name}: class has no images (png, jpg or jpeg)")
        files.extend(images)
        labels.extend([index] * len(images))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        pixels = list(pool.map(_read_image, files))
    return np.stack(pixels), np.asarray(labels, dtype=np.int64)


def _load_image_folder(root: Path) -> Dataset:
    train_classes = _class_folders(root / "train")
    test_classes = _class_folders(root / "test")
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise EdgefireError(f"{root}: class folders differ between train and test "
                            f"(only in train: {only_train or '-'}; only in test: "
                            f"{only_test or '-'})")
    x_train, y_train = _load_split(root / "train", train_classes)
    x_test, y_test = _load_split(root / "test", train_classes)
    return Dataset(x_train, y_train, x_test, y_test, tuple(train_classes), str(root), "")


# --- splits --------------------------------------------------------------------------------


def balanced_pick(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `count` items, as equal a share of every class as the classes allow."""
    classes = np.unique(labels)
    per_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
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
    """Carve a seeded, class-balanced validation split out of train; optionally limit train.

    The validation split is at most a tenth of the training images, so tiny datasets keep
    most of their images for training. The test split is returned untouched.
    """
    rng = np.random.default_rng(seed)
    n_val = max(min(val_size, len(data.y_train) // 10), len(data.classes))
    val_indices = balanced_pick(data.y_train, n_val, rng)
    rest = np.setdiff1d(np.arange(len(data.y_train)), val_indices)
    if limit is not None and limit < len(rest):
        rest = rest[balanced_pick(data.y_train[rest], limit, rng)]
    return Splits(data.x_train[rest], data.y_train[rest], data.x_train[val_indices],
                  data.y_train[val_indices], data.x_test, data.y_test, rest, val_indices,
                  data.classes)
