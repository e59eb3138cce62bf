"""`edgefire build`: train, prune, quantize, export and verify, skipping what is up to date.

A stage is up to date when the manifest records it with the same config, inputs whose
sha256 still match, and intact outputs; `--force` reruns everything. The stages are those of
`edgefire.registry`, in its order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefire import artifacts, layout, report
from edgefire.checks import choice
from edgefire.errors import EdgefireError
from edgefire.registry import BY_NAME, NAMES, STAGES, Context
from edgefire.stages import distribute


@dataclass(frozen=True)
class Plan:
    configs: dict  # stage name -> its config, for every stage of the registry
    force: bool = False
    distribute: str = "auto"  # where training runs; not part of any stage's config

    def __post_init__(self):
        choice(self.distribute, distribute.MODES, "--distribute")
        if set(self.configs) != set(NAMES):
            raise ValueError(f"a plan has a config for each of {NAMES}")
        if self.train.flip_average and (self.prune.prunes or self.quantize.qat):
            raise EdgefireError("--flip-average ships a model that is neither pruned nor "
                                "QAT-trained: give --sparsity 0 and no --prune or --qat")

    def __getattr__(self, name: str):  # plan.train, plan.prune, ...: a stage's config
        if name in NAMES:
            return self.configs[name]
        raise AttributeError(name)

    def context(self, stage: str) -> Context:
        """What `stage` runs with in this build: the data where it is now, where training
        runs (a multi-worker build's chief fine-tunes alone), whether there is a prune, the
        int8 file's I/O type."""
        where = self.distribute
        if stage != "train" and where == "multi-worker":
            where = None
        return Context(self.train.data, where, self.prune.prunes, self.quantize.io)


@dataclass(frozen=True)
class Step:
    name: str
    inputs: Callable[[Path], list[Path]]  # the files it reads, resolved when it is its turn
    config: dict  # what the manifest records and compares
    action: Callable[[Path], object]


def steps(plan: Plan) -> list[Step]:
    """The stages this build runs, in order."""
    rows = []
    for stage in STAGES:
        config, context = plan.configs[stage.name], plan.context(stage.name)
        if stage.included(config):
            rows.append(Step(stage.name,
                             lambda f, stage=stage, context=context: stage.inputs(f, context),
                             stage.recorded(config, context),
                             lambda f, stage=stage, config=config, context=context:
                             stage.run(config, f, context)))
    return rows


def run(plan: Plan, folder: Path, echo=print) -> dict | None:
    """Run every stage that is not up to date; stop at the first failure with its stage named.

    In a multi-worker build the other workers only help the chief train: they learn from it
    whether training is to run, train with it, and return None.
    """
    if plan.distribute == "multi-worker":
        placement = distribute.place(plan.distribute)
        if not placement.is_chief:
            return help_chief_train(plan, folder, placement, echo)
        chief_tells_workers(plan, folder, placement)
    from edgefire.stages import train

    train.check_inputs(plan.train, folder)
    with artifacts.created_folder(folder):
        return _run_stages(plan, folder, echo)


def dry_run(plan: Plan, folder: Path, echo=print) -> None:
    """Say which stages a build would run and why; run nothing and write nothing. A stage
    after one that runs is said to run too: it reads what that one writes."""
    from edgefire.stages import train

    train.check_inputs(plan.train, folder)
    before = None  # the first stage that would run
    for stage in steps(plan):
        if plan.force:
            reason = "--force"
        elif before:
            reason = f"after {before}"
        else:
            reason = artifacts.why_stale(folder, stage.name, stage.inputs(folder), stage.config)
        if reason is None:
            echo(f"= {stage.name}: up to date")
        else:
            echo(f"> {stage.name}: would run ({reason})")
            before = before or stage.name


def _run_stages(plan: Plan, folder: Path, echo) -> dict:
    if plan.force and (aside := artifacts.set_aside_manifest(folder)):
        echo(f"! {folder / artifacts.MANIFEST} was unreadable: kept as {aside}, starting over")
    log = {"stages": {}, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    start = time.perf_counter()
    for stage in steps(plan):
        inputs = stage.inputs(folder)
        if not plan.force and artifacts.stage_is_current(folder, stage.name, inputs,
                                                         stage.config):
            echo(f"= {stage.name}: up to date")
            log["stages"][stage.name] = {"status": "up to date", "seconds": 0.0}
            continue
        echo(f"> {stage.name} ...")
        began = time.perf_counter()
        try:
            stage.action(folder)
        except EdgefireError as exc:
            raise type(exc)(f"{stage.name}: {exc}") from None
        seconds = round(time.perf_counter() - began, 1)
        echo(f"< {stage.name} done in {seconds:.0f} s")
        log["stages"][stage.name] = {"status": "ran", "seconds": seconds}
    log["seconds"] = round(time.perf_counter() - start, 1)
    if any(s["status"] == "ran" for s in log["stages"].values()) or not _has_build_log(folder):
        artifacts.write_json(folder / layout.BUILD_LOG, log)
        artifacts.record_stage(folder, "build", [folder / layout.BUILD_LOG], [], {})
    else:  # an up-to-date folder is left as it was, byte for byte
        echo(f"= nothing ran: {layout.BUILD_LOG} still logs the build that made these files")
    return report.load(folder)  # verify's, whether it ran now or was up to date


def _has_build_log(folder: Path) -> bool:
    """The manifest records a build log and its bytes still match."""
    try:
        artifacts.artifact_path(folder, layout.BUILD_LOG, "build")
    except EdgefireError:
        return False
    return True


def training_needed(plan: Plan, folder: Path) -> bool:
    train, context = BY_NAME["train"], plan.context("train")
    return plan.force or not artifacts.stage_is_current(
        folder, "train", train.inputs(folder, context), train.recorded(plan.train, context))


def chief_tells_workers(plan: Plan, folder: Path, placement) -> None:
    """The chief's half of the agreement: whether the other workers are to train."""
    placement.from_chief([np.array([float(training_needed(plan, folder))])])


def help_chief_train(plan: Plan, folder: Path, placement, echo) -> None:
    """A non-chief worker's build: train with the chief when it trains, write nothing."""
    trains, = placement.from_chief([np.array([0.0])])
    if trains[0]:
        echo(f"> train (worker {placement.task_index}) ...")
        BY_NAME["train"].run(plan.train, folder, plan.context("train"))
    echo(f"worker {placement.task_index}: "
         f"{'trained with the chief' if trains[0] else 'the chief has nothing to train'}; "
         "the chief builds and verifies the rest")
    return None
