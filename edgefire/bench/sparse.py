"""`make bench-sparse`: when TFLite's sparse weight encoding makes a smaller file.

    python -m edgefire.bench.sparse --model artifacts/pruned.h5 --out artifacts/bench-sparse.json

The model's convolution kernels (all but the first and the last, as prune leaves them) are
set to each fraction of zeros by magnitude, and converted in each mode dense and
sparse-encoded; `tflite_converter.INT8_SPARSE_FROM` is where int8 starts to gain. Bytes do
not depend on calibration, so random pixels calibrate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

FRACTIONS = (0.4, 0.5, 0.6, 0.7, 0.9)
MODES = ("int8", "dynamic", "float16", "none")


def with_zeros(weights: list[np.ndarray], fraction: float) -> list[np.ndarray]:
    """The kernels of the inner convolutions with `fraction` of each set to 0 by magnitude."""
    kernels = [i for i, w in enumerate(weights) if w.ndim == 4]
    inner = set(kernels[1:-1])
    return [np.where(np.abs(w) <= np.quantile(np.abs(w), fraction), 0, w) if i in inner else w
            for i, w in enumerate(weights)]


def rows(model_path: Path) -> list[dict]:
    from edgefire import models, tflite_converter
    from edgefire.contract import InputContract

    model = models.load_model(model_path)
    calibration = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    weights, found = model.get_weights(), []
    for fraction in FRACTIONS:
        model.set_weights(with_zeros(weights, fraction))
        sparsity = models.kernel_sparsity(model)["overall"]
        for mode in MODES:
            size = {sparse: len(tflite_converter.convert(model, mode, "uint8", calibration,
                                                         sparse, InputContract()))
                    for sparse in (False, True)}
            found.append({"zeros": round(sparsity, 3), "mode": mode, "dense": size[False],
                          "sparse": size[True]})
            print(found[-1], flush=True)
    return found


def table(found: list[dict]) -> list[str]:
    lines = ["| zeros in the kernels | mode | dense bytes | sparse-encoded bytes |",
             "|---:|---|---:|---:|"]
    lines += [f"| {r['zeros']:.1%} | {r['mode']} | {r['dense']:,} | {r['sparse']:,} |"
              for r in found]
    return lines


def main(argv=None) -> int:
    from edgefire import artifacts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("artifacts/pruned.h5"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench-sparse.json"))
    args = parser.parse_args(argv)
    found = rows(args.model)
    artifacts.write_results(args.out, found, table(found), model=str(args.model))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
