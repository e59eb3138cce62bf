"""The `edgefire` command line: one thin function per stage; TensorFlow loads only when one runs.

Exit codes: 0 success, 1 a verification gate failed, 2 bad input or usage, 3 a tool failed on
valid input, 70 an internal error (a bug), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup, _click

from edgefire import config as defaults
from edgefire import layout
from edgefire.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EdgefireError,
    Terminated,
)


class OneLineErrors(TyperGroup):
    """Usage errors (unknown option, a value of the wrong type) as one `edgefire: error:` line,
    like every other bad input, instead of click's usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            code = EXIT_BAD_INPUT
        except _click.exceptions.ClickException as exc:
            typer.echo(f"edgefire: error: {one_line(exc.format_message())}", err=True)
            code = exc.exit_code
        except typer.Abort:
            typer.echo("edgefire: interrupted", err=True)
            code = EXIT_INTERRUPTED
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True,
                  rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Train, prune, quantize, export and verify a tiny image classifier.")


def artifacts_folder(value: str | Path) -> Path:
    """The --artifacts value as a path; empty is refused rather than read as the current folder."""
    if isinstance(value, Path):  # the default
        return value
    if not value.strip():
        raise typer.BadParameter("must not be empty (use . for the current folder)",
                                 param_hint="'--artifacts'")
    return Path(value)


T, P, Q, E, V = (defaults.TrainConfig(), defaults.PruneConfig(), defaults.QuantizeConfig(),
                 defaults.ExportConfig(), defaults.VerifyConfig())

ArtifactsOpt = Annotated[Path, typer.Option(help="Artifacts folder (inputs and outputs).",
                                            parser=artifacts_folder)]
DataOpt = Annotated[str, typer.Option(help="'cifar10', a cifar-10-python.tar.gz, a "
                                      "cifar-10-batches-py folder or an image-folder root.")]
DropoutOpt = Annotated[float, typer.Option(
    help="Dropout rate before conv10 while training; the shipped model is the same at any rate.")]
OptimizerOpt = Annotated[str, typer.Option(
    help="Training optimizer: sgd (Nesterov momentum 0.9) or adam.")]
LearningRateOpt = Annotated[float | None, typer.Option(
    help="Peak learning rate [default: sgd 0.1, adam 0.003].")]
ImageSizeOpt = Annotated[int | None, typer.Option(
    help="Model input is N x N; images of any size are resized to it [default: 32, or a "
         "given model's own].")]
ModelOpt = Annotated[str | None, typer.Option(
    help="A Keras classifier to start from instead of --arch: tf_keras .h5 or .keras, or a "
         "SavedModel folder; --epochs 0 takes it as it is.")]
MeanOpt = Annotated[str | None, typer.Option(
    help="A given model's input is (pixel - mean) / std: one value or three, pixel units "
         "[default: 0, or raw pixels for a model that rescales itself].")]
StdOpt = Annotated[str | None, typer.Option(help="See --mean [default: 255].")]
HeadEpochsOpt = Annotated[int, typer.Option(
    help="A given model with a new head: epochs of the head alone (body frozen) first.")]
DataOverrideOpt = Annotated[str | None, typer.Option(
    "--data", help="Override the data source recorded by train.")]
FallbackOpt = Annotated[bool, typer.Option(
    help="int8: past --max-drop on validation, try QAT, then keep the worst layers in float.")]
DistributeOpt = Annotated[str, typer.Option(
    help="Where training runs: auto (mirrored over 2+ GPUs, else none), none, mirrored, "
         "multi-worker (configured by TF_CONFIG).")]
PruneOpt = Annotated[str, typer.Option(
    "--prune", help="magnitude (zeros in the kernels), channels (whole filters removed: a "
                    "smaller int8 file) or both.")]
ChannelSparsityOpt = Annotated[float, typer.Option(
    help="channels: fraction of every convolution's filters removed.")]
TargetBytesOpt = Annotated[int | None, typer.Option(
    help="channels: remove the fewest filters that bring the int8 TFLite under N bytes.")]
DistillOpt = Annotated[bool, typer.Option(
    help="Fine-tune the pruned model to match the unpruned one's scores too (knowledge "
         "distillation).")]
GateRuntimesOpt = Annotated[str, typer.Option(
    help="all: gate each file in every runtime that ran it; native: in its own runtime only.")]
MicroImagesOpt = Annotated[int, typer.Option(
    help="Test images (class-balanced) TFLite Micro runs; 0 = all.")]
TrustOpt = Annotated[bool, typer.Option(
    help="Let Keras model files load and run their Lambda layers (Python code stored in the "
         "file); only for files from a source you trust.")]


@app.callback()
def _group(verbose: Annotated[bool, typer.Option(
        "--verbose", help="Show TensorFlow's and the converters' own log lines.")] = False
           ) -> None:
    """Train, prune, quantize, export and verify a tiny image classifier."""
    if verbose:
        os.environ["EDGEFIRE_VERBOSE"] = "1"


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def run_stage(action, trust_model_code: bool = False) -> None:
    """Run a stage; expected failures become one line on stderr and their exit code."""
    from edgefire import models

    try:
        with models.trusting_code(trust_model_code):
            action()
    except EdgefireError as exc:
        typer.echo(f"edgefire: error: {one_line(exc)}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except Terminated:
        typer.echo("edgefire: terminated (SIGTERM); finished artifacts are intact", err=True)
        raise typer.Exit(EXIT_TERMINATED) from None
    except KeyboardInterrupt:
        typer.echo("edgefire: interrupted; finished artifacts are intact", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception:  # a bug: show where, and never exit 1, which means a missed gate
        traceback.print_exc()
        typer.echo("edgefire: internal error (a bug in edgefire, not your input): please "
                   "report it with the traceback above", err=True)
        raise typer.Exit(EXIT_INTERNAL) from None


@app.command()
def train(
    data: DataOpt = T.data,
    arch: Annotated[str, typer.Option(help="Architecture: squeezenet (the reference), "
                                      "squeezenet_bypass, squeezenet32, or FILE.py:FUNCTION "
                                      "(function(input_shape, classes) -> tf_keras Model).")]
    = T.arch,
    model: ModelOpt = None,
    image_size: ImageSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    head_epochs: HeadEpochsOpt = T.head_epochs,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = T.epochs,
    batch_size: Annotated[int, typer.Option(help="Images per training step.")] = T.batch_size,
    optimizer: OptimizerOpt = T.optimizer,
    learning_rate: LearningRateOpt = None,
    dropout: DropoutOpt = T.dropout,
    seed: Annotated[int, typer.Option(help="Seed of splits, shuffles and init.")] = T.seed,
    limit: Annotated[int | None, typer.Option(
        help="Train on a class-balanced subset of N images (smoke runs).")] = None,
    distribute: DistributeOpt = "auto",
    trust_model_code: TrustOpt = False,
    artifacts: ArtifactsOpt = Path("artifacts"),
) -> None:
    """Train the model and write it, its history, curves and metadata to the artifacts folder."""

    def action():
        from edgefire import train as stage
        config = defaults.TrainConfig(data=data, arch=arch, model=model,
                                      image_size=image_size, mean=mean, std=std,
                                      head_epochs=head_epochs, epochs=epochs,
                                      batch_size=batch_size, optimizer=optimizer,
                                      learning_rate=learning_rate, dropout=dropout, seed=seed,
                                      limit=limit)
        meta = stage.run(config, artifacts, distribute)
        if meta["distribute"]["task_index"]:
            typer.echo(f"worker {meta['distribute']['task_index']}: trained with the chief in "
                       f"{meta['wall_seconds']:.0f} s; the chief wrote the artifacts")
            return
        typer.echo(f"trained {config.arch}: validation accuracy {meta['val_accuracy']:.4f}, "
                   f"{meta['parameters']:,} parameters, {meta['wall_seconds']:.0f} s "
                   f"({meta['images_per_second']:.0f} images/s) -> {artifacts / layout.TRAINED}")

    run_stage(action, trust_model_code)


@app.command()
def prune(
    method: PruneOpt = P.method,
    channel_sparsity: ChannelSparsityOpt = P.channel_sparsity,
    target_bytes: TargetBytesOpt = None,
    sparsity: Annotated[float, typer.Option(help="Target fraction of zeros per pruned kernel.")]
    = P.sparsity,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = P.epochs,
    distill: DistillOpt = P.distill,
    optimizer: Annotated[str, typer.Option(help="Fine-tuning optimizer: adam or sgd.")]
    = P.optimizer,
    learning_rate: Annotated[float, typer.Option(help="Fine-tuning learning rate.")]
    = P.learning_rate,
    keep_dense: Annotated[str, typer.Option(
        help="Comma-separated layers left dense ('' prunes every convolution).")]
    = ",".join(P.keep_dense),
    distribute: DistributeOpt = "auto",
    trust_model_code: TrustOpt = False,
    artifacts: ArtifactsOpt = Path("artifacts"),
    data: DataOverrideOpt = None,
) -> None:
    """Prune the trained model with fine-tuning and record the measured sparsity."""

    def action():
        from edgefire import prune as stage

        names = tuple(name.strip() for name in keep_dense.split(",") if name.strip())
        config = defaults.PruneConfig(method=method, channel_sparsity=channel_sparsity,
                                      target_bytes=target_bytes, sparsity=sparsity,
                                      epochs=epochs, distill=distill, optimizer=optimizer,
                                      learning_rate=learning_rate, keep_dense=names)
        result = stage.run(config, artifacts, data, distribute)
        params = result["parameters"]
        typer.echo(f"pruned ({config.method}): {params['before']:,} -> {params['after']:,} "
                   f"parameters, {result['sparsity']['overall']:.1%} zeros in the pruned "
                   f"layers: validation accuracy {result['val_accuracy_before']:.4f} -> "
                   f"{result['val_accuracy_after']:.4f} -> {artifacts / layout.PRUNED}")

    run_stage(action, trust_model_code)


@app.command()
def quantize(
    quantize: Annotated[str, typer.Option(
        "--quantize", help="int8 (full integer), float16, dynamic (range) or none.")] = Q.mode,
    qat: Annotated[bool, typer.Option(help="Quantization-aware fine-tuning first (int8).")]
    = Q.qat,
    qat_epochs: Annotated[int, typer.Option(help="QAT fine-tuning epochs.")] = Q.qat_epochs,
    qat_learning_rate: Annotated[float, typer.Option(help="QAT fine-tuning learning rate.")]
    = Q.qat_learning_rate,
    calibration_samples: Annotated[int, typer.Option(
        help="Training images that calibrate int8 ranges.")] = Q.calibration_samples,
    io: Annotated[str, typer.Option(help="int8 model input/output type: uint8 (phones, "
                                    "MediaPipe) or int8 (microcontrollers).")] = Q.io,
    max_drop: Annotated[float, typer.Option(
        help="int8: largest top-1 drop (points) on the validation split before the "
             "fallback tries again.")] = Q.max_drop,
    fallback: FallbackOpt = Q.fallback,
    trust_model_code: TrustOpt = False,
    artifacts: ArtifactsOpt = Path("artifacts"),
    data: DataOverrideOpt = None,
) -> None:
    """Convert the pruned (or trained) model to a TFLite model in the chosen precision."""

    def action():
        from edgefire import quantize as stage

        config = defaults.QuantizeConfig(mode=quantize, qat=qat, qat_epochs=qat_epochs,
                                         qat_learning_rate=qat_learning_rate,
                                         calibration_samples=calibration_samples, io=io,
                                         max_drop=max_drop, fallback=fallback)
        result = stage.run(config, artifacts, data)
        size = (artifacts / result["artifact"]).stat().st_size
        tensor = result["tensors"]["input"]
        typer.echo(f"{result['mode']} TFLite: {size:,} bytes, input {tensor['dtype']} "
                   f"(scale {tensor['scale']:.6g}, zero point {tensor['zero_point']}) -> "
                   f"{artifacts / result['artifact']}")
        if result["fallback"] and len(result["fallback"]["attempts"]) > 1:
            from edgefire import report

            typer.echo(report.fallback_summary(result["fallback"]))

    run_stage(action, trust_model_code)


@app.command()
def export(
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = E.opset,
    trust_model_code: TrustOpt = False,
    artifacts: ArtifactsOpt = Path("artifacts"),
    data: DataOverrideOpt = None,
) -> None:
    """Write the deployable TFLite and ONNX files and labels.txt."""

    def action():
        from edgefire import export as stage

        result = stage.run(defaults.ExportConfig(opset=opset), artifacts, data)
        for name in result["deployables"]:
            typer.echo(f"{(artifacts / name).stat().st_size:>9,} B  {artifacts / name}")

    run_stage(action, trust_model_code)


@app.command()
def verify(
    max_bytes: Annotated[int, typer.Option(help="Size gate in bytes (0.5 MB = 500,000).")]
    = V.max_bytes,
    max_drop: Annotated[float, typer.Option(
        help="Largest allowed top-1 drop from the float reference, in points.")] = V.max_drop,
    min_accuracy: Annotated[float | None, typer.Option(
        help="Optional floor on top-1 accuracy (0-1).")] = None,
    gate_runtimes: GateRuntimesOpt = V.gate_runtimes,
    micro_images: MicroImagesOpt = V.micro_images,
    trust_model_code: TrustOpt = False,
    artifacts: ArtifactsOpt = Path("artifacts"),
    data: DataOverrideOpt = None,
) -> None:
    """Run every artifact in every runtime that takes it on the test split; gate size and
    accuracy."""

    def action():
        from edgefire import verification as stage

        config = defaults.VerifyConfig(max_bytes=max_bytes, max_drop=max_drop,
                                       min_accuracy=min_accuracy, gate_runtimes=gate_runtimes,
                                       micro_images=micro_images)
        show_report(lambda: stage.run(config, artifacts, data), artifacts, "all gates passed")

    run_stage(action, trust_model_code)


# build's flags -> (config section, field); only flags given on the command line override a
# config file, the project's [tool.edgefire] and the defaults
BUILD_FLAGS = {
    "data": ("train", "data"), "arch": ("train", "arch"), "image_size": ("train", "image_size"),
    "model": ("train", "model"), "mean": ("train", "mean"), "std": ("train", "std"),
    "head_epochs": ("train", "head_epochs"),
    "epochs": ("train", "epochs"), "batch_size": ("train", "batch_size"),
    "optimizer": ("train", "optimizer"), "learning_rate": ("train", "learning_rate"),
    "dropout": ("train", "dropout"), "seed": ("train", "seed"), "limit": ("train", "limit"),
    "sparsity": ("prune", "sparsity"), "prune_epochs": ("prune", "epochs"),
    "method": ("prune", "method"), "channel_sparsity": ("prune", "channel_sparsity"),
    "target_bytes": ("prune", "target_bytes"),
    "prune_learning_rate": ("prune", "learning_rate"), "distill": ("prune", "distill"),
    "qat_learning_rate": ("quantize", "qat_learning_rate"),
    "keep_dense": ("prune", "keep_dense"), "quantize": ("quantize", "mode"),
    "qat": ("quantize", "qat"), "qat_epochs": ("quantize", "qat_epochs"),
    "calibration_samples": ("quantize", "calibration_samples"), "io": ("quantize", "io"),
    "opset": ("export", "opset"), "max_bytes": ("verify", "max_bytes"),
    "max_drop": ("verify", "max_drop"), "min_accuracy": ("verify", "min_accuracy"),
    "gate_runtimes": ("verify", "gate_runtimes"), "micro_images": ("verify", "micro_images"),
    "fallback": ("quantize", "fallback"),
}


def given_flags(ctx: typer.Context) -> dict[str, dict]:
    """The build flags given on the command line, as config sections."""
    sections: dict[str, dict] = {}
    for name, (section, field) in BUILD_FLAGS.items():
        if ctx.get_parameter_source(name).name == "COMMANDLINE":
            value = ctx.params[name]
            if name == "keep_dense":
                value = [layer.strip() for layer in value.split(",") if layer.strip()]
            sections.setdefault(section, {})[field] = value
    return sections


@app.command()
def build(
    ctx: typer.Context,
    quantize: Annotated[str, typer.Option(
        "--quantize", help="int8 (full integer), float16, dynamic (range) or none.")] = Q.mode,
    data: DataOpt = T.data,
    arch: Annotated[str, typer.Option(help="Architecture (see train).")] = T.arch,
    model: ModelOpt = None,
    image_size: ImageSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    head_epochs: HeadEpochsOpt = T.head_epochs,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = T.epochs,
    batch_size: Annotated[int, typer.Option(help="Images per training step.")] = T.batch_size,
    optimizer: OptimizerOpt = T.optimizer,
    learning_rate: LearningRateOpt = None,
    dropout: DropoutOpt = T.dropout,
    seed: Annotated[int, typer.Option(help="Seed of splits, shuffles and init.")] = T.seed,
    limit: Annotated[int | None, typer.Option(help="Class-balanced training subset.")] = None,
    method: PruneOpt = P.method,
    channel_sparsity: ChannelSparsityOpt = P.channel_sparsity,
    target_bytes: TargetBytesOpt = None,
    sparsity: Annotated[float, typer.Option(help="Pruning target (0 skips pruning).")]
    = P.sparsity,
    prune_epochs: Annotated[int, typer.Option(help="Pruning fine-tune epochs.")] = P.epochs,
    prune_learning_rate: Annotated[float, typer.Option(
        help="Pruning fine-tune peak learning rate.")] = P.learning_rate,
    distill: DistillOpt = P.distill,
    keep_dense: Annotated[str, typer.Option(help="Layers left dense, comma-separated.")]
    = ",".join(P.keep_dense),
    qat: Annotated[bool, typer.Option(help="Quantization-aware fine-tuning (int8).")] = Q.qat,
    qat_epochs: Annotated[int, typer.Option(help="QAT fine-tuning epochs.")] = Q.qat_epochs,
    qat_learning_rate: Annotated[float, typer.Option(help="QAT fine-tuning learning rate.")]
    = Q.qat_learning_rate,
    calibration_samples: Annotated[int, typer.Option(help="int8 calibration images.")]
    = Q.calibration_samples,
    io: Annotated[str, typer.Option(help="int8 input/output type: uint8 or int8.")] = Q.io,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = E.opset,
    max_bytes: Annotated[int, typer.Option(help="Size gate in bytes.")] = V.max_bytes,
    max_drop: Annotated[float, typer.Option(help="Largest allowed drop, in points.")]
    = V.max_drop,
    min_accuracy: Annotated[float | None, typer.Option(help="Optional accuracy floor.")] = None,
    gate_runtimes: GateRuntimesOpt = V.gate_runtimes,
    micro_images: MicroImagesOpt = V.micro_images,
    fallback: FallbackOpt = Q.fallback,
    force: Annotated[bool, typer.Option(help="Rerun every stage, even if up to date.")] = False,
    distribute: DistributeOpt = "auto",
    config: Annotated[Path | None, typer.Option(
        help="TOML file with [train], [prune], [quantize], [export], [verify] sections of "
             "config fields; flags override it.")] = None,
    trust_model_code: TrustOpt = False,
    artifacts: ArtifactsOpt = Path("artifacts"),
) -> None:
    """Train, prune, quantize, export and verify; skip stages that are up to date."""

    def action():
        from edgefire import api

        flags = given_flags(ctx)
        show_report(lambda: api.build(artifacts, config=config, force=force,
                                      distribute=distribute, echo=typer.echo, **flags),
                    artifacts, "build passed")

    run_stage(action, trust_model_code)


@app.command()
def compare(
    folders: Annotated[list[Path], typer.Argument(help="Artifacts folders of finished builds.")],
    output: Annotated[Path | None, typer.Option(help="Also write the table to this file.")]
    = None,
) -> None:
    """One table row per build: parameters, MACs, int8 size and accuracy, float accuracy, time."""

    def action():
        from edgefire import artifacts
        from edgefire import compare as stage

        lines = "\n".join(stage.table([stage.row(folder) for folder in folders])) + "\n"
        typer.echo(lines, nl=False)
        if output is not None:
            artifacts.write_text(output, lines)

    run_stage(action)


@app.command()
def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    artifacts: ArtifactsOpt = Path("artifacts"),
    model: Annotated[Path | None, typer.Option(
        help="Model file (.tflite, .onnx, .h5) [default: the build's quantized TFLite].")]
    = None,
    top: Annotated[int, typer.Option(help="Labels to show per image.")] = 1,
    json_output: Annotated[bool, typer.Option(
        "--json", help="Print a JSON list of {file, top: [{label, score}]}.")] = False,
    runtime: Annotated[str | None, typer.Option(
        help="Run the model in litert, onnxruntime, tf_keras, openvino or tflite-micro "
             "[default: the file's own].")] = None,
    trust_model_code: TrustOpt = False,
) -> None:
    """Classify images of any size with a built model (FILE, LABEL, SCORE per line)."""

    def action():
        import json

        from edgefire import predict as stage
        from edgefire.checks import in_range

        in_range(top, 1, None, "--top")
        results = stage.run(paths, artifacts, model, top, runtime=runtime,
                            trust_code=trust_model_code)
        if json_output:
            typer.echo(json.dumps(results, indent=2, ensure_ascii=False))
            return
        for result in results:
            labels = "\t".join(f"{stage.printable(t['label'])}\t{t['score']:.4f}"
                                for t in result["top"])
            typer.echo(f"{result['file']}\t{labels}")

    run_stage(action)


def show_report(verification, artifacts: Path, passed: str) -> None:
    """Run `verification`; print the report table whether its gates pass or fail."""
    from edgefire import report
    from edgefire.errors import GateFailed

    def show(result: dict) -> None:
        typer.echo("\n".join([*report.table(result), *report.skipped(result)]))

    try:
        result = verification()
    except GateFailed:
        show(report.load(artifacts))
        raise
    if result is None:  # a multi-worker build's other worker: it has said what it did
        return
    show(result)
    typer.echo(f"{passed} -> {artifacts / layout.REPORT_MD}")


def _terminate(signum, frame):
    raise Terminated()


def main() -> None:
    """The console entry point: SIGTERM ends a run like Ctrl-C, with its own exit code.

    SIGINT is handled even when started from a shell that ignores it for background jobs
    (Python keeps an inherited "ignore"), so an interrupt always ends with 130.
    """
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    app()


if __name__ == "__main__":
    sys.exit(main())
