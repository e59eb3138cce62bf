"""`edgefire predict`: classify image files or folders of any size with a built model.

The default model is the build's quantized TFLite; `.onnx` and Keras files work too. Images
are prepared by the build's input contract (decoded, upright, RGB, resized as MediaPipe
does), so the answer is the one an app gets; class names come from `labels.txt` or from the
labels packed in the TFLite file.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from edgefire import artifacts, data, layout, runtimes
from edgefire.contract import InputContract, of_build
from edgefire.errors import EdgefireError

ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n"}


def default_model(folder: Path) -> Path:
    """The quantized TFLite recorded by the build in `folder`."""
    quantized = artifacts.read_json(folder / layout.record("quantize"), "quantize metadata")
    return artifacts.artifact_path(folder, quantized["artifact"], "predict")


def labels_of(model: Path, folder: Path) -> list[str]:
    """Class names: labels.txt beside the model or in the artifacts folder, else the file
    packed in a TFLite model's metadata."""
    for candidate in (model.parent / layout.LABELS, folder / layout.LABELS):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8").splitlines()
    if model.suffix == ".tflite" and zipfile.is_zipfile(model):
        with zipfile.ZipFile(model) as packed:
            if layout.LABELS in packed.namelist():
                return packed.read(layout.LABELS).decode("utf-8").splitlines()
    raise EdgefireError(f"{model}: no class names (no {layout.LABELS} beside it or in "
                        "its metadata)")


def printable(text: str) -> str:
    """`text` as one field of a line: a backslash doubled, tab and newline as `\\t` and
    `\\n`, other control characters (ANSI escapes) and the bytes of a file name that are not
    UTF-8 as `\\xNN`."""
    out = []
    for char in os.fsencode(text).decode("utf-8", "surrogateescape"):
        code = ord(char)
        if char in ESCAPES:
            out.append(ESCAPES[char])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 32 or 127 <= code < 160:
            out.append(f"\\x{code:02x}")
        else:
            out.append(char)
    return "".join(out)


def build_contract(folder: Path) -> InputContract | None:
    """The build's contract when its train.json is at hand."""
    train = folder / layout.record("train")
    if train.is_file():
        return of_build(artifacts.read_json(train, "training metadata"))
    return None


def image_files(paths: list[Path]) -> list[Path]:
    """The files given, and the image files in the folders given (recursively, hidden skipped)."""
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise EdgefireError(f"{path}: no such file or folder")
        if path.is_file():
            files.append(path)
            continue
        found = sorted(p for p in path.rglob("*") if p.is_file()
                       and p.suffix.lower() in data.IMAGE_SUFFIXES
                       and not any(data.hidden(part) for part in p.relative_to(path).parts))
        if not found:
            raise EdgefireError(f"{path}: folder has no images")
        files.extend(found)
    return files


def run(paths: list[Path], folder: Path, model: Path | None = None, top: int = 1,
        batch: int = 64, runtime: str | None = None, trust_code: bool = False) -> list[dict]:
    """Top-`top` labels and scores of every image: [{"file", "top": [{"label", "score"}]}],
    from `runtime` (`runtimes.RUNTIMES`; by default the file's native one); `trust_code`
    lets a Keras file's `Lambda` layers load (and run)."""
    model = model or default_model(folder)
    contract = build_contract(folder)
    runner = runtimes.open_model(model, contract=contract, runtime=runtime,
                                 trust_code=trust_code)
    size = contract.size if contract else runner.input_size  # a lone model: its own input
    labels = labels_of(model, folder)
    files = image_files(paths)
    results = []
    for start in range(0, len(files), batch):
        chunk = files[start:start + batch]
        scores = runner.run(np.stack([data.read_image(f, size) for f in chunk]))
        if scores.shape[1] != len(labels):
            raise EdgefireError(f"{model}: gives {scores.shape[1]} scores but there are "
                                f"{len(labels)} labels")
        for file, row in zip(chunk, scores, strict=True):
            best = np.argsort(-row, kind="stable")[:top]
            results.append({"file": printable(str(file)),
                            "top": [{"label": labels[i], "score": round(float(row[i]), 6)}
                                    for i in best]})
    return results
