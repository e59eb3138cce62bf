"""`make bench-train`: training images/s of the default pipeline against a plain model.fit,
and on one device against two logical CPU devices (`--distribute mirrored`).

All runs train the same model (the default recipe's training graph) at the same batch size
in the same process, so their ratios are comparable on a shared, noisy machine. The default
pipeline also augments every image; the plain fit takes pre-normalized NumPy arrays. The
two logical devices share the same cores: their figure checks the plumbing of
`MirroredStrategy` (its split and all-reduce), it is not a speed-up on this machine.

    python -m edgefire.bench.train --data PATH [--steps N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from edgefire import data
from edgefire.config import TrainConfig
from edgefire.stages import distribute, fitting
from edgefire.stages import train as training


def _model(config: TrainConfig, splits: data.Splits):
    model = training.build_training_model(config, splits)
    fitting.compile_model(model, config.learning_rate, config.label_smoothing,
                          config.optimizer)
    return model


def images_per_second(fit, images: int) -> float:
    fit(images // 4)  # warm-up: tracing and the first steps
    start = time.perf_counter()
    fit(images)
    return images / (time.perf_counter() - start)


def run(source: str, steps: int, out: Path) -> dict:
    os.environ.setdefault(distribute.CPU_DEVICES, "2")
    mirrored = distribute.place("mirrored")  # first: logical devices precede TensorFlow's start
    config = TrainConfig(data=source)
    splits = data.split(data.load(source), config.val_size, config.seed)
    count = steps * config.batch_size
    x, y = splits.x_train[:count], splits.y_train[:count]
    pipeline_model, plain_model = _model(config, splits), _model(config, splits)
    with mirrored.strategy.scope():
        mirrored_model = _model(config, splits)

    def fit_pipeline(model):
        def fit(n):
            ds = fitting.training_dataset(x[:n], y[:n], config.batch_size, config.seed, 0,
                                          True, config.contract)
            model.fit(ds, epochs=1, steps_per_epoch=n // config.batch_size, verbose=0)
        return fit

    x_float = config.contract.normalize(x)

    def plain(n):
        plain_model.fit(x_float[:n], y[:n], batch_size=config.batch_size, epochs=1, verbose=0,
                        shuffle=True)

    result = {"data": source, "batch_size": config.batch_size, "images": count,
              "default_pipeline_ips": round(images_per_second(fit_pipeline(pipeline_model),
                                                              count), 1),
              "plain_fit_numpy_ips": round(images_per_second(plain, count), 1),
              "two_logical_devices_ips": round(images_per_second(fit_pipeline(mirrored_model),
                                                                 count), 1),
              "two_logical_devices": mirrored.devices,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    result["ratio"] = round(result["default_pipeline_ips"] / result["plain_fit_numpy_ips"], 3)
    result["two_logical_devices_ratio"] = round(
        result["two_logical_devices_ips"] / result["default_pipeline_ips"], 3)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="cifar10")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench-train.json"))
    args = parser.parse_args()
    print(json.dumps(run(args.data, args.steps, args.out), indent=2))


if __name__ == "__main__":
    main()
