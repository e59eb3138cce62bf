"""`edgefire predict`: classify image files or folders of any size with a built model.

The default model is the build's quantized TFLite; `.onnx` and Keras files work too. Images
are prepared by the build's input contract (decoded, upright, RGB, resized as MediaPipe
does), so the answer is the one an app gets; class names come from `labels.txt` or from the
labels packed in the TFLite file.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from edgefire import artifacts, data, formats, layout, records, runtimes
from edgefire.contract import InputContract
from edgefire.errors import EdgefireError

MAX_LABEL = 1000  # characters: a class name, not a file pasted into labels.txt
ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n"}


def default_model(folder: Path) -> Path:
    """The quantized TFLite recorded by the build in `folder`."""
    return artifacts.artifact_path(folder, records.quantize(folder).artifact, "predict")


def labels_of(model: Path, folder: Path, own: bool) -> list[str]:
    """Class names. The build's own model: its labels.txt, checked against the manifest (a
    file edited after the build is refused); when labels.txt is gone, the labels packed in
    the build's quantized TFLite (said on stderr). Another file: the labels packed in its
    TFLite metadata, else a labels.txt beside it."""
    if own and not (folder / layout.LABELS).exists():
        tflite = default_model(folder)
        if (labels := packed_labels(tflite)) is not None:
            print(f"edgefire: {folder / layout.LABELS} is missing: class names from "
                  f"{tflite.name}'s metadata", file=sys.stderr)
            return labels
    if own:
        path = artifacts.artifact_path(folder, layout.LABELS, "predict")
        return read_labels(path.read_bytes(), path)
    if (labels := packed_labels(model)) is not None:
        return labels
    beside = model.parent / layout.LABELS
    if beside.is_file():
        return read_labels(beside.read_bytes(), beside)
    raise EdgefireError(f"{model}: no class names (none in its metadata, no {layout.LABELS} "
                        "beside it)")


def packed_labels(model: Path) -> list[str] | None:
    """The labels packed in a TFLite file's metadata (a zip appended to the flatbuffer)."""
    if model.suffix in formats.FORMATS["tflite"].suffixes and zipfile.is_zipfile(model):
        with zipfile.ZipFile(model) as packed:
            if layout.LABELS in packed.namelist():
                return read_labels(packed.read(layout.LABELS), model)
    return None


def read_labels(raw: bytes, where: Path) -> list[str]:
    """Class names, one a line, UTF-8; anything else is one line naming the file."""
    try:
        labels = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise EdgefireError(f"{where}: class names are not UTF-8 text") from None
    if not labels or any(len(label) > MAX_LABEL for label in labels):
        raise EdgefireError(f"{where}: not a list of class names (empty, or a line over "
                            f"{MAX_LABEL} characters)")
    return labels


def is_own(model: Path, folder: Path) -> bool:
    """Whether `model` is a file the build in `folder` recorded."""
    manifest = folder / artifacts.MANIFEST
    if not manifest.is_file() or model.parent.resolve() != folder.resolve():
        return False
    return model.name in artifacts.load_manifest(folder)["artifacts"]


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
    if (folder / layout.record("train")).is_file():
        return records.train(folder).contract
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


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Scores as probabilities: a file that gives logits (a PyTorch export) gets a softmax."""
    if np.all(scores >= 0) and np.allclose(scores.sum(axis=1), 1.0, atol=0.02):
        return scores
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def foreign_contract(normalize: tuple, own: bool) -> InputContract | None:
    """The input a file from elsewhere takes (`--mean`, `--std`); None when not given. A
    build's own files carry theirs in train.json: one line if they are given anyway."""
    from edgefire.config import channels

    mean, std = (channels(normalize[0], "--mean", 0, 255), channels(normalize[1], "--std", 0,
                                                                      None))
    if mean is None and std is None:
        return None
    if own:
        raise EdgefireError("--mean and --std are for a model file from elsewhere: the build's "
                            "own files take the normalization recorded in train.json")
    return InputContract(mean=mean or (0.0,) * 3, std=std or (255.0,) * 3)


def run(paths: list[Path], folder: Path, model: Path | None = None, top: int = 1,
        batch: int = 64, runtime: str | None = None, trust_code: bool = False,
        normalize: tuple = (None, None)) -> list[dict]:
    """Top-`top` labels and scores of every image: [{"file", "top": [{"label", "score"}]}],
    from `runtime` (`runtimes.RUNTIMES`; by default the file's native one); `trust_code`
    lets a Keras file's `Lambda` layers load (and run); `normalize`, the (--mean, --std) a
    file from elsewhere expects."""
    model = model or default_model(folder)
    own = is_own(model, folder)
    foreign = foreign_contract(normalize, own)
    # another file: its own input size, and the normalization given for it
    contract = build_contract(folder) if own else foreign
    runner = runtimes.open_model(model, contract=contract, runtime=runtime,
                                 trust_code=trust_code)
    size = contract.size if own and contract else runner.input_size
    labels = labels_of(model, folder, own)
    files = image_files(paths)
    results = []
    for start in range(0, len(files), batch):
        chunk = files[start:start + batch]
        scores = probabilities(runner.run(np.stack([data.read_image(f, size) for f in chunk])))
        if scores.shape[1] != len(labels):
            raise EdgefireError(f"{model}: gives {scores.shape[1]} scores but there are "
                                f"{len(labels)} labels")
        for file, row in zip(chunk, scores, strict=True):
            best = np.argsort(-row, kind="stable")[:top]
            results.append({"file": printable(str(file)),
                            "top": [{"label": labels[i], "score": round(float(row[i]), 6)}
                                    for i in best]})
    return results
