"""Tiny learnable datasets written in every format edgefire reads (no network, no real data)."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
# one distinct colour per class: learnable in an epoch or two
PALETTE = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30], [230, 30, 230],
                    [30, 230, 230], [240, 240, 240], [20, 20, 20], [230, 130, 30],
                    [130, 30, 230]], dtype=np.float32)


def images(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` noisy 32x32 images of each class colour, with a dark square at a random spot."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    x = PALETTE[labels][:, None, None, :] + rng.normal(0, 25, (len(labels), 32, 32, 3))
    for i, (row, col) in enumerate(rng.integers(0, 24, (len(labels), 2))):
        x[i, row:row + 8, col:col + 8] *= 0.4
    x[:, 0, 0] = 0  # the full 0-255 range appears in every image
    x[:, 0, 1] = 255
    return np.clip(x, 0, 255).astype(np.uint8), labels


def write_image_folder(root: Path, train_per_class: int = 60, test_per_class: int = 20,
                       suffix: str = ".png") -> Path:
    from PIL import Image

    for split, per_class, seed in (("train", train_per_class, 1), ("test", test_per_class, 2)):
        x, y = images(per_class, seed)
        for i, (pixels, label) in enumerate(zip(x, y, strict=True)):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{i:04d}{suffix}")
    return root


def _batch(x: np.ndarray, y: np.ndarray) -> bytes:
    return pickle.dumps({b"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1),
                         b"labels": [int(v) for v in y]})


def write_cifar_folder(folder: Path, train_per_class: int = 50, test_per_class: int = 10) -> Path:
    """A cifar-10-batches-py folder: five training batches, a test batch and batches.meta."""
    folder.mkdir(parents=True, exist_ok=True)
    x, y = images(train_per_class, 3)
    order = np.random.default_rng(0).permutation(len(y))
    for i, part in enumerate(np.array_split(order, 5), start=1):
        (folder / f"data_batch_{i}").write_bytes(_batch(x[part], y[part]))
    xt, yt = images(test_per_class, 4)
    (folder / "test_batch").write_bytes(_batch(xt, yt))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}))
    return folder


def write_cifar_archive(path: Path) -> Path:
    """A cifar-10-python.tar.gz holding a cifar-10-batches-py folder."""
    folder = write_cifar_folder(path.parent / "cifar-10-batches-py")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return path
