"""The `edgefire` command line: one thin function per stage; TensorFlow loads only when one runs.

Exit codes: 0 success, 1 a verification gate failed, 2 bad input or usage, 3 a tool failed on
valid input, 70 an internal error (a bug), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from edgefire import cli_options, layout
from edgefire.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EdgefireError,
    Terminated,
)
from edgefire.registry import STAGES, Context, Stage


class OneLineErrors(TyperGroup):
    """Usage errors (unknown option, a value of the wrong type) as one `edgefire: error:` line,
    like every other bad input, instead of click's usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        args = sys.argv[1:] if args is None else list(args)
        try:
            if not args:  # nothing asked: the help, as a usage error
                super().main(["--help"], prog_name, complete_var, standalone_mode=False,
                             **extra)
                code = EXIT_BAD_INPUT
            else:
                code = super().main(args, prog_name, complete_var, standalone_mode=False,
                                    **extra)
        except typer.Abort:
            typer.echo("edgefire: interrupted", err=True)
            code = EXIT_INTERRUPTED
        except Exception as exc:
            if not is_usage_error(exc):
                raise
            typer.echo(f"edgefire: error: {one_line(exc.format_message())}", err=True)
            code = exc.exit_code
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def is_usage_error(exc: Exception) -> bool:
    """Click's errors for the command line (typer's copy of click keeps the class private;
    `typer.BadParameter` is one of them)."""
    return hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)


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


# the options that are not config fields (those come from config.py, see cli_options)
ArtifactsOpt = Annotated[Path, typer.Option(help="Artifacts folder (inputs and outputs).",
                                            parser=artifacts_folder)]
DataOverrideOpt = Annotated[str | None, typer.Option(
    "--data", help="Override the data source recorded by train.")]
DistributeOpt = Annotated[str, typer.Option(
    help="Where training runs: auto (mirrored over 2+ GPUs, else none), none, mirrored, "
         "multi-worker (configured by TF_CONFIG).")]
ConfigOpt = Annotated[Path | None, typer.Option(
    help="TOML file with [train], [prune], [quantize], [export], [verify] sections of config "
         "fields; options given here override it, and it overrides [tool.edgefire].")]
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
    from edgefire.models import stored_code

    try:
        with stored_code.trusting_code(trust_model_code):
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


def stage_config(section: str, given: dict, config: Path | None):
    """The stage's config: defaults, [tool.edgefire], --config FILE, the options given."""
    from edgefire import api

    return api.stage_config(section, api.settings(given, config, "the command line"))


def stage_command(stage: Stage):
    """The command of a registry stage: its config's options, --config, --trust-model-code,
    --artifacts, and --data and --distribute where the stage takes them."""

    def command(given: dict, config: ConfigOpt = None, trust_model_code: TrustOpt = False,
                artifacts: ArtifactsOpt = Path("artifacts"), data: DataOverrideOpt = None,
                distribute: DistributeOpt = "auto") -> None:
        def action():
            settings = stage_config(stage.name, given, config)
            show(lambda: stage.run(settings, artifacts, Context(data, distribute)), artifacts,
                 lambda record: stage.summary(record, artifacts))

        run_stage(action, trust_model_code)

    taken = [p for p in inspect.signature(command, eval_str=True).parameters.values()
             if (p.name != "data" or stage.reads_data) and (p.name != "distribute" or
                                                            stage.trains)]
    command.__signature__ = inspect.Signature(taken)
    command.__name__, command.__doc__ = stage.name, stage.help
    return cli_options.with_config_options((stage.name,))(command)


for _stage in STAGES:
    app.command(_stage.name)(stage_command(_stage))


@app.command()
@cli_options.with_config_options(("quantize", "train", "prune", "export", "verify"),
                                 on_build=True)
def build(
    given: dict,
    force: Annotated[bool, typer.Option(help="Rerun every stage, even if up to date.")] = False,
    dry_run: Annotated[bool, typer.Option(
        help="Say which stages would run and why; run and write nothing.")] = False,
    distribute: DistributeOpt = "auto",
    config: ConfigOpt = None,
    trust_model_code: TrustOpt = False,
    artifacts: ArtifactsOpt = Path("artifacts"),
) -> None:
    """Train, prune, quantize, export and verify; skip stages that are up to date."""

    def action():
        from edgefire import api, report

        show(lambda: api.build(artifacts, config=config, force=force, distribute=distribute,
                               dry_run=dry_run, echo=typer.echo, **given), artifacts,
             lambda result: "\n".join([*report.printed(result),
                                       f"build passed -> {artifacts / layout.REPORT_MD}"]))

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
    mean: Annotated[str | None, typer.Option(
        help="A --model file from elsewhere takes (pixel - mean) / std: one value or three, "
             "pixel units [default: 0].")] = None,
    std: Annotated[str | None, typer.Option(help="See --mean [default: 255].")] = None,
) -> None:
    """Classify images of any size with a built model (FILE, LABEL, SCORE per line)."""

    def action():
        import json

        from edgefire import predict as stage
        from edgefire.checks import in_range

        in_range(top, 1, None, "--top")
        results = stage.run(paths, artifacts, model, top, runtime=runtime,
                            trust_code=trust_model_code, normalize=(mean, std))
        if json_output:
            typer.echo(json.dumps(results, indent=2, ensure_ascii=False))
            return
        for result in results:
            labels = "\t".join(f"{stage.printable(t['label'])}\t{t['score']:.4f}"
                                for t in result["top"])
            typer.echo(f"{result['file']}\t{labels}")

    run_stage(action)


def show(work, artifacts: Path, summary) -> None:
    """Run `work` and print `summary` of what it returns (nothing when it returns None: a dry
    run or a multi-worker build's other worker has said what it did); on a missed gate, the
    report's tables before the error line."""
    from edgefire import report
    from edgefire.errors import GateFailed

    try:
        result = work()
    except GateFailed:
        typer.echo("\n".join(report.printed(report.load(artifacts))))
        raise
    if result is not None:
        typer.echo(summary(result))


def _terminate(signum, frame):
    raise Terminated()


SUPERVISED = "EDGEFIRE_SUPERVISED"  # set in the worker a supervisor runs
GRACE_SECONDS = 8  # for a signalled worker to end itself before its supervisor kills it


def main() -> None:
    """The console entry point: SIGTERM ends a run like Ctrl-C, with its own exit code.

    SIGINT is handled even when started from a shell that ignores it for background jobs
    (Python keeps an inherited "ignore"), so an interrupt always ends with 130. A
    multi-worker run is supervised (`supervise`).
    """
    if is_multi_worker(sys.argv[1:]) and not os.environ.get(SUPERVISED):
        sys.exit(supervise(sys.argv[1:]))
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    app()


def is_multi_worker(args: list[str]) -> bool:
    return "--distribute=multi-worker" in args or any(
        a == "--distribute" and b == "multi-worker" for a, b in zip(args, args[1:],
                                                                    strict=False))


def supervise(args: list[str]) -> int:
    """Run a multi-worker command as a child process that this one can always end.

    Once TensorFlow's collective ops run, a worker's main thread, where Python runs signal
    handlers, can stay inside them for a minute and more, so a worker may not answer SIGTERM.
    This light process (no TensorFlow) forwards SIGTERM to the worker (Ctrl-C reaches both:
    they share the terminal's process group), and kills it when it has not ended
    `GRACE_SECONDS` after either: checkpoints and artifacts are written atomically, so a
    killed worker loses only the epoch under way.
    """
    import subprocess
    import time

    child = subprocess.Popen([sys.executable, "-m", "edgefire.cli", *args],
                             env={**os.environ, SUPERVISED: "1"})
    received: list[tuple[int, float]] = []

    def forward(signum, frame):
        received.append((signum, time.monotonic()))
        if signum == signal.SIGTERM and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        try:
            return exit_status(child.wait(timeout=0.2))
        except subprocess.TimeoutExpired:
            pass
        if received and time.monotonic() - received[0][1] > GRACE_SECONDS:
            child.kill()
            child.wait()
            name = signal.Signals(received[0][0]).name
            print(f"edgefire: terminated ({name}): the worker did not stop within "
                  f"{GRACE_SECONDS} s and was killed; finished artifacts are intact",
                  file=sys.stderr, flush=True)
            return EXIT_TERMINATED if received[0][0] == signal.SIGTERM else EXIT_INTERRUPTED


def exit_status(returncode: int) -> int:
    """A child's status as a shell reports it: 128 + N for a child ended by signal N
    (Python's -N would leave the process as 256 - N: 241 for SIGTERM)."""
    return 128 - returncode if returncode < 0 else returncode


if __name__ == "__main__":
    sys.exit(main())
