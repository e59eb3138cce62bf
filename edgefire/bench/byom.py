"""`make bench-byom`: models trained elsewhere, brought to edgefire as they are and fine-tuned.

    python -m edgefire.bench.byom --data ../shared/data/cifar10-jpeg --work .bench-byom \
        --out artifacts/bench-byom.json

"Elsewhere" is plain Keras 3 (`import keras`, not tf_keras, not edgefire's recipe): Adam 1e-3,
batch 128, no augmentation, on the whole training split, saved as a Keras 3 `.keras` file.
Two models: a small CNN of a user's own making (it rescales its input itself) and the Keras
application MobileNetV2 (alpha 0.35, from scratch: no pretrained weights offline here), which
expects -1..1 pixels (`--mean 127.5 --std 127.5`). Each file is then built twice by
`edgefire build --quantize int8 --model FILE`: `--epochs 0` (as it is) and `--epochs 5`
(fine-tuned), both with `--sparsity 0` so the rows show what bringing the model does, not
pruning. A row's numbers come from the build's train.json and report.json.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from edgefire import bench, records

FINE_TUNE_EPOCHS = 5
CONTRACTS = {"my_cnn": (), "mobilenet_v2": ("--mean", "127.5", "--std", "127.5")}


def my_cnn(keras):
    """A user's own small CNN: rescaling inside, conv-BN-ReLU blocks, a dense softmax head."""
    layers = keras.layers
    inputs = keras.Input((32, 32, 3), name="photo")
    x = layers.Rescaling(1 / 255.0)(inputs)
    for filters in (24, 48, 96):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(96, 3, padding="same", use_bias=False)(x)
    x = layers.GlobalAveragePooling2D()(layers.ReLU()(layers.BatchNormalization()(x)))
    return keras.Model(inputs, layers.Dense(10, activation="softmax", name="scores")(x),
                       name="my_cnn")


def mobilenet_v2(keras):
    return keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None,
                                          classes=10)


def train_elsewhere(name: str, data: Path, epochs: int, out: Path) -> dict:
    """Train the named model with Keras 3's own fit and save it as a Keras 3 `.keras` file."""
    import keras

    from edgefire import data as datasets

    dataset = datasets.load(str(data), 32)
    keras.utils.set_random_seed(0)
    model = {"my_cnn": my_cnn, "mobilenet_v2": mobilenet_v2}[name](keras)
    x = dataset.x_train.astype("float32")
    if name == "mobilenet_v2":
        x = x / 127.5 - 1.0  # keras.applications.mobilenet_v2.preprocess_input
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, dataset.y_train, batch_size=128, epochs=epochs, verbose=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    return {"parameters": int(model.count_params()), "train_epochs": epochs,
            "train_seconds": round(time.perf_counter() - start, 1)}


def build(name: str, model: Path, data: Path, epochs: int, out: Path,
          contract: tuple[str, ...] = ()) -> dict:
    """`edgefire build --quantize int8 --model FILE` (no pruning) of a model, as a row: the
    file's own top-1, the float and int8 TFLite top-1, the int8 bytes, exit code, time."""
    command = [sys.executable, "-m", "edgefire.cli", "build", "--quantize", "int8", "--model",
               str(model), "--data", str(data), "--epochs", str(epochs), "--sparsity", "0",
               *contract, "--artifacts", str(out), "--force"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-build.log").write_text(done.stdout + done.stderr)
    result = {"model": name, "epochs": epochs, "exit_code": done.returncode,
              "seconds": round(time.perf_counter() - start, 1), "command": command[3:]}
    if (out / "train.json").exists():
        given = records.train(out).rest["given_model"]
        result.update(test_before=given.get("test_accuracy_given"),
                      contract=given.get("contract"))
    if (out / "report.json").exists():
        verified = records.report(out)
        int8 = verified.file("tflite", "int8")
        result["float_top1"] = verified.file("keras", "float32").accuracy
        if int8:
            result.update(int8_top1=int8.accuracy, int8_bytes=int8.bytes)
    return result


def table(rows: list[dict]) -> list[str]:
    lines = ["| model (Keras 3 file) | parameters | edgefire | float top-1 before | "
             "float top-1 after | int8 TFLite top-1 | int8 bytes | exit | build (s) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mode = "as it is (--epochs 0)" if r["epochs"] == 0 else f"fine-tuned ({r['epochs']})"
        cells = bench.percents(r, ("test_before", "float_top1", "int8_top1"))
        size = f"{r['int8_bytes']:,}" if "int8_bytes" in r else "-"
        lines.append(f"| {r['model']} | {r['parameters']:,} | {mode} | {' | '.join(cells)} | "
                     f"{size} | {r['exit_code']} | {r['seconds']:.0f} |")
    return lines


def main(argv=None) -> int:
    parser = bench.arguments(__doc__, "byom")
    parser.add_argument("--train-epochs", type=int, default=10)
    args = parser.parse_args(argv)
    work = args.work.resolve()
    rows = []
    for name in CONTRACTS:
        model = work / f"{name}.keras"
        trained = train_elsewhere(name, args.data, args.train_epochs, model)
        for epochs in (0, FINE_TUNE_EPOCHS):
            result = {**trained, **build(name, model, args.data, epochs,
                                         work / "builds" / f"{name}-{epochs}",
                                         CONTRACTS[name])}
            print("\n".join(table([result])[2:]), flush=True)
            rows.append(result)
    return bench.finish(args.out, rows, table)  # a model over 500,000 B fails its gate


if __name__ == "__main__":
    sys.exit(main())
