"""The stages of a build, each declared once, in the order a build runs them. A stage's name
is also its config section (`[prune]`), its record (`prune.json`) and its command.

`pipeline` (build), `api` (settings and plans), the command line (a command per stage) and
the manifest (`artifacts`) loop over `STAGES`; adding a stage is its module and one line
here. A stage's module provides:

    inputs(folder, context) -> list[Path]   the artifacts it reads, resolved when it is its
                                            turn (a build checks their hashes)
    run(config, folder, context) -> dict    does the work, writes its files and its record
                                            (`records.py` reads it back) and returns it
    summary(record, folder) -> str          what its command prints when it is done
    recorded(config, context) -> dict       optional: what the manifest records and a build
                                            compares, when that is more than the config
                                            (train adds its data's fingerprint)

Modules are imported when a stage runs: TensorFlow loads only then.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from edgefire.config import (
    ExportConfig,
    PruneConfig,
    QuantizeConfig,
    TrainConfig,
    VerifyConfig,
    as_dict,
)


@dataclass(frozen=True)
class Context:
    """What a stage is run with besides its config and folder."""

    data: str | None = None  # where the data is now (`--data`), else train's recorded source
    distribute: str | None = "auto"  # where training runs (`distribute.MODES`); None:
    # TensorFlow's default placement (a multi-worker build's chief after training)
    pruned: bool = True  # quantize takes prune's model (False: a build without pruning)
    io: str = "uint8"  # the int8 TFLite's input and output type (quantize's `--io`), which
    # prune's byte search measures with; a prune run on its own assumes quantize's default


DEFAULT = Context()  # a stage run on its own: the recorded data, on this machine, after prune


@dataclass(frozen=True)
class Stage:
    name: str
    config: type  # its config dataclass (`config.py`)
    module: str  # the module that runs it
    help: str  # its command's
    included: Callable[[object], bool] = lambda config: True  # whether a build runs it
    trains: bool = False  # its command takes --distribute (where its training runs)
    reads_data: bool = True  # its command takes --data (where train's data is now)

    def code(self) -> ModuleType:
        return importlib.import_module(self.module)

    def recorded(self, config, context: Context) -> dict:
        code = self.code()
        return code.recorded(config, context) if hasattr(code, "recorded") else as_dict(config)

    def inputs(self, folder: Path, context: Context) -> list[Path]:
        return self.code().inputs(folder, context)

    def run(self, config, folder: Path, context: Context) -> dict:
        return self.code().run(config, folder, context)

    def summary(self, record: dict, folder: Path) -> str:
        return self.code().summary(record, folder)


STAGES = (
    Stage("train", TrainConfig, "edgefire.stages.train", "Train the model and write it, its "
          "history, curves and metadata to the artifacts folder.", trains=True,
          reads_data=False),
    Stage("prune", PruneConfig, "edgefire.stages.prune", "Prune the trained model with "
          "fine-tuning and record the measured sparsity.", lambda config: config.prunes,
          trains=True),
    Stage("quantize", QuantizeConfig, "edgefire.stages.quantize", "Convert the pruned (or "
          "trained) model to a TFLite model in the chosen precision."),
    Stage("export", ExportConfig, "edgefire.stages.export", "Write the deployable TFLite and "
          "ONNX files and labels.txt."),
    Stage("verify", VerifyConfig, "edgefire.stages.verify", "Run every artifact in every "
          "runtime that takes it on the test split; gate size and accuracy."),
)
NAMES = tuple(stage.name for stage in STAGES)
SECTIONS = {stage.name: stage.config for stage in STAGES}  # config file section -> class
BY_NAME = {stage.name: stage for stage in STAGES}
