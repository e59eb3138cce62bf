"""The Python API and config files: the same builds as the CLI, for notebooks, CI and tools.

    import edgefire
    report = edgefire.build("artifacts", train={"data": "photos", "epochs": 15},
                            prune={"sparsity": 0.3})
    report = edgefire.verify("artifacts", max_drop=0.5)

Settings come in sections named for the stages (`train`, `prune`, `quantize`, `export`,
`verify`) whose keys are the fields of the config dataclasses in `config.py`. A TOML file
(`edgefire build --config FILE.toml`, or the `[tool.edgefire]` table of the project's
pyproject.toml) has the same sections; later sources override earlier ones: defaults, then
pyproject.toml, then the config file, then the arguments (or the CLI's flags).
"""

from __future__ import annotations

import re
import tomllib
import typing
from pathlib import Path

from edgefire.checks import accepts, type_name
from edgefire.config import VerifyConfig, build_flags
from edgefire.errors import EdgefireError
from edgefire.registry import SECTIONS, Context


def read_settings(path: Path) -> dict[str, dict]:
    """The sections of a TOML config file, checked: known sections, keys and types."""
    try:
        settings = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EdgefireError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise EdgefireError(f"{path}: not a readable TOML config ({exc})") from None
    return checked(settings, str(path))


def project_settings(folder: Path = Path(".")) -> dict[str, dict]:
    """The `[tool.edgefire]` table of the pyproject.toml in `folder`, if there is one."""
    path = folder / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        tool = tomllib.loads(path.read_text(encoding="utf-8")).get("tool", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise EdgefireError(f"{path}: not a readable TOML file ({exc})") from None
    table = tool.get("edgefire") if isinstance(tool, dict) else None
    if table is not None and not isinstance(table, dict):
        raise EdgefireError(f"{path}: [tool.edgefire] must be a table of sections (got "
                            f"{type(table).__name__})")
    return checked(table or {}, f"{path} [tool.edgefire]")


def checked(settings: dict, where: str) -> dict[str, dict]:
    """`settings` if every section, key and value type is one of the configs'."""
    for section, values in settings.items():
        if section not in SECTIONS:
            raise EdgefireError(f"{where}: unknown section [{section}] (sections: "
                                f"{', '.join(SECTIONS)})")
        if not isinstance(values, dict):
            raise EdgefireError(f"{where}: [{section}] must be a table of settings")
        hints = typing.get_type_hints(SECTIONS[section])
        for key, value in values.items():
            if key not in hints:
                raise EdgefireError(f"{where}: unknown key {key!r} in [{section}] (keys: "
                                    f"{', '.join(hints)})")
            if not accepts(hints[key], value):
                raise EdgefireError(f"{where}: [{section}] {key} must be {type_name(hints[key])}"
                                    f" (got {type(value).__name__} {value!r})")
    return settings


def merged(*sources: dict[str, dict]) -> dict[str, dict]:
    """Sections merged key by key, later sources winning."""
    result: dict[str, dict] = {section: {} for section in SECTIONS}
    for source in sources:
        for section, values in source.items():
            result[section].update(values)
    return result


def plan(settings: dict[str, dict], force: bool = False, distribute: str = "auto"):
    """The build plan of merged settings (every config checks its own values). Verify's
    `max_drop` is also the fallback's (quantize's) unless both are given; a byte budget of
    channel pruning travels in prune's record to verify's size gate (`verify.size_budget`)."""
    from edgefire.pipeline import Plan

    configs = {}
    for section, cls in SECTIONS.items():
        try:
            configs[section] = stage_config(section, settings)
        except EdgefireError as exc:  # named as build's flags: --prune-epochs, not --epochs
            raise EdgefireError(as_build_flags(str(exc), cls)) from None
    return Plan(configs, force=force, distribute=distribute)


def as_build_flags(message: str, cls) -> str:
    """`message` with a stage's flags spelled as `edgefire build` spells them."""
    for stage_flag, flag in build_flags(cls).items():
        message = re.sub(rf"(?<![\w-]){re.escape(stage_flag)}(?![\w-])", flag, message)
    return message


def stage_config(section: str, settings: dict[str, dict]):
    """The config of one stage from merged settings, with the budgets `plan` shares."""
    settings = _shared(settings, ("verify", "max_drop"), ("quantize", "max_drop"))
    return SECTIONS[section](**settings.get(section, {}))


def _shared(settings: dict[str, dict], source: tuple[str, str], target: tuple[str, str]):
    """`settings` with the source's value also set as the target's, unless that is given."""
    value = settings.get(source[0], {}).get(source[1])
    if value is None or target[1] in settings.get(target[0], {}):
        return settings
    return {**settings, target[0]: {**settings.get(target[0], {}), target[1]: value}}


def build(artifacts: str | Path = "artifacts", *, config: str | Path | None = None,
          train: dict | None = None, prune: dict | None = None, quantize: dict | None = None,
          export: dict | None = None, verify: dict | None = None, force: bool = False,
          distribute: str = "auto", dry_run: bool = False, echo=print) -> dict | None:
    """Run `edgefire build` and return its report (report.json's contract); None on a
    multi-worker build's other workers, which only help the chief train.

    `distribute` is where training runs (`distribute.MODES`): it does not change what is
    built, so it is not part of the settings a stage is compared by. `dry_run` only says
    which stages would run and why, and returns None.
    Raises `EdgefireError` for bad input and `GateFailed` (a subclass) for a missed gate.
    """
    from edgefire import pipeline

    sections = {"train": train, "prune": prune, "quantize": quantize, "export": export,
                "verify": verify}
    given = {name: values for name, values in sections.items() if values}
    planned = plan(settings(given, config, "build()"), force, distribute)
    if dry_run:
        return pipeline.dry_run(planned, Path(artifacts), echo=echo)
    return pipeline.run(planned, Path(artifacts), echo=echo)


def settings(given: dict[str, dict], config: str | Path | None, where: str) -> dict[str, dict]:
    """What every build and command runs with: the defaults, then the project's
    `[tool.edgefire]`, then the config file, then `given` (checked, named by `where`)."""
    return merged(project_settings(), read_settings(Path(config)) if config else {},
                  checked(given, where))


def verify(artifacts: str | Path = "artifacts", data: str | None = None, **values) -> dict:
    """Run `edgefire verify` (VerifyConfig fields as keywords) and return the report."""
    from edgefire.stages import verify as stage

    config = VerifyConfig(**checked({"verify": values}, "verify()")["verify"])
    return stage.run(config, Path(artifacts), Context(data))
