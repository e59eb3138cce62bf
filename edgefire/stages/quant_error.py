"""Where int8 hurts: the quantization error of every layer, from TensorFlow Lite's own
`QuantizationDebugger`, on validation images.

The debugger runs the float and the quantized model side by side and compares each quantized
tensor with its float counterpart. The error is reported as RMSE over the tensor's
quantization scale: rounding alone gives about 0.29 (1/sqrt(12)); a layer far above that is
where the int8 model departs from the float one.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from edgefire import data
from edgefire.contract import InputContract
from edgefire.tfenv import quiet, tensorflow

IMAGES = 1000  # class-balanced validation images the debugger runs (about 10 s here)
SHOWN = 5  # layers report.md lists


def layer_name(tensor_name: str, model_name: str, op: str) -> str:
    """"fire2/squeeze1x1" of "squeezenet/fire2/squeeze1x1/Relu;squeezenet/fire2/...", or the
    op's name for a tensor named outside the model (the output: "softmax")."""
    first = tensor_name.split(";")[0]
    if not first.startswith(f"{model_name}/"):
        return op.lower()
    parts = first.removeprefix(f"{model_name}/").split("/")
    return "/".join(parts[:-1]) if len(parts) > 1 else parts[0]


def layer_errors(converter, model_name: str, images: np.ndarray, contract: InputContract
                 ) -> list[dict]:
    """One entry per quantized tensor, the largest RMSE/scale first."""
    tf = tensorflow()

    def dataset():
        for image in images:
            yield [contract.normalize(image[None])]

    with quiet():
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter,
                                                             debug_dataset=dataset)
        debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    rows = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(row["scale"])
        rmse = float(np.sqrt(float(row["mean_squared_error"])))
        rows.append({"layer": layer_name(row["tensor_name"], model_name, row["op_name"]),
                     "op": row["op_name"], "node": row["tensor_name"],
                     "rmse_over_scale": round(rmse / scale, 4) if scale else None,
                     "rmse": round(rmse, 6), "scale": scale,
                     "mean_error": round(float(row["mean_error"]), 6)})
    return sorted(rows, key=lambda r: -(r["rmse_over_scale"] or 0))


def on_validation(converter, model_name: str, splits: data.Splits, contract: InputContract,
                  seed: int) -> dict:
    """The per-layer errors on class-balanced validation images, with how many were used."""
    picked = data.balanced_pick(splits.y_val, IMAGES, np.random.default_rng([seed, 11]))
    return {"split": "validation", "images": int(len(picked)), "metric": "rmse/scale",
            "layers": layer_errors(converter, model_name, splits.x_val[picked], contract)}
