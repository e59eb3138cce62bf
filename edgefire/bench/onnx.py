"""`make bench-onnx`: classifiers exported from PyTorch, brought to edgefire as ONNX files.

    python -m edgefire.bench.onnx --data ../shared/data/cifar10-jpeg --work .bench-onnx \
        --out artifacts/bench-onnx.json

The files are torchvision's own `squeezenet1_1` and `mobilenet_v3_small`, trained briefly on
CIFAR-10 (JPEG copy) and exported by torch's two exporters (tests/fixtures/torchvision, made
by tests/fixtures/train_torchvision.py; their ImageNet normalization is in accuracy.json).
For each file: the conversion to Keras layers and its equality check against onnxruntime on
1,000 test images, timed; then `edgefire build --quantize int8 --model FILE` as it is
(`--epochs 0`) and fine-tuned, without pruning. Targets: agreement >= 99.5%, and the int8
TFLite within 1 point of the file's own float top-1 in onnxruntime.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from edgefire import bench, records
from edgefire.bench.byom import build

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "torchvision"
FINE_TUNE_EPOCHS = 2
CHECKED_IMAGES = 1000


def normalization() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The files' mean and std in pixel units, as they were trained."""
    facts = json.loads((FIXTURES / "accuracy.json").read_text())
    return tuple(facts["mean"]), tuple(facts["std"])


def flags() -> tuple[str, ...]:
    mean, std = normalization()
    return "--mean", ",".join(map(str, mean)), "--std", ",".join(map(str, std))


def conversion(path: Path, data: Path) -> dict:
    """Seconds to read and convert the file and to check it on the first test images."""
    from edgefire import data as datasets
    from edgefire.contract import InputContract
    from edgefire.models import from_onnx

    contract = InputContract(32, *normalization())
    images = contract.normalize(datasets.load(str(data), 32).x_test[:CHECKED_IMAGES])
    start = time.perf_counter()
    model = from_onnx.read(path)
    converted, logits = from_onnx.convert(model, path, 32)
    converted_seconds = time.perf_counter() - start
    equal = from_onnx.compare(path, converted, images.astype(np.float32), logits)
    return {"parameters": int(converted.count_params()), **from_onnx.describe(model),
            "convert_seconds": round(converted_seconds, 1),
            "convert_and_check_seconds": round(time.perf_counter() - start, 1),
            "agreement": equal["agreement"],
            "max_score_difference": equal["max_score_difference"]}


def file_top1(out: Path) -> float | None:
    """The ONNX file's own top-1 in onnxruntime, from its report row."""
    if not (out / "report.json").exists():
        return None
    given = next((f for f in records.report(out).files if f.given), None)
    return given.accuracy if given else None


def table(rows: list[dict]) -> list[str]:
    lines = ["| ONNX file | parameters | conversion + check (s) | agreement | edgefire | "
             "file top-1 (onnxruntime) | float top-1 after | int8 TFLite top-1 | int8 bytes | "
             "exit | build (s) |", "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mode = "as it is (--epochs 0)" if r["epochs"] == 0 else f"fine-tuned ({r['epochs']})"
        cells = bench.percents(r, ("agreement", "file_top1", "float_top1", "int8_top1"))
        size = f"{r['int8_bytes']:,}" if "int8_bytes" in r else "-"
        lines.append(f"| {r['file']} | {r['parameters']:,} | "
                     f"{r['convert_and_check_seconds']:.1f} | {cells[0]} | {mode} | "
                     f"{' | '.join(cells[1:])} | {size} | {r['exit_code']} | "
                     f"{r['seconds']:.0f} |")
    return lines


def main(argv=None) -> int:
    args = bench.arguments(__doc__, "onnx").parse_args(argv)
    rows = []
    for path in sorted(FIXTURES.glob("*.onnx")):
        converted = conversion(path, args.data)
        for epochs in (0, FINE_TUNE_EPOCHS):
            out = args.work.resolve() / f"{path.stem}-{epochs}"
            result = {"file": path.name, **converted,
                      **build(path.stem, path, args.data, epochs, out, flags())}
            result["file_top1"] = file_top1(out)
            print("\n".join(table([result])[2:]), flush=True)
            rows.append(result)
    return bench.finish(args.out, rows, table)


if __name__ == "__main__":
    sys.exit(main())
