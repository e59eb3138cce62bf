"""Command-line options generated from the config fields: each option's flag, help and default
are declared once, on its field in `config.py` (`config.option`), and every command that takes
it (its stage's and `build`) gets it from here. The configs check the values themselves.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Annotated

import typer

from edgefire import api
from edgefire.config import flag_of


@dataclass(frozen=True)
class ConfigOption:
    """A config field as an option of one command."""

    section: str
    field: str
    parameter: inspect.Parameter  # of the command's function
    listed: bool  # a tuple field, given comma-separated

    def value(self, given):
        if self.listed:
            return [part.strip() for part in given.split(",") if part.strip()]
        return given


def cli_type(hint):
    """The type typer parses for a field's type hint (tuples are comma-separated strings)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner, = (cli_type(arg) for arg in typing.get_args(hint) if arg is not type(None))
        return inner | None
    return str if typing.get_origin(hint) is tuple else hint


def options_of(section: str, on_build: bool) -> list[ConfigOption]:
    """The options of a config section's fields, on its stage's command or on `build`."""
    cls = api.SECTIONS[section]
    hints = typing.get_type_hints(cls)
    found = []
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if "help" not in meta or (on_build and meta["build"] is False):
            continue
        flag = flag_of(field, on_build)
        kind = cli_type(hints[field.name])
        listed = typing.get_origin(hints[field.name]) is tuple and kind is str
        declared = f"{flag}/--no-{flag[2:]}" if kind is bool else flag
        parameter = inspect.Parameter(
            flag[2:].replace("-", "_"), inspect.Parameter.KEYWORD_ONLY,
            default=",".join(field.default) if listed else field.default,
            annotation=Annotated[kind, typer.Option(declared, help=meta["help"])])
        found.append(ConfigOption(section, field.name, parameter, listed))
    return found


def with_config_options(sections: tuple[str, ...], on_build: bool = False):
    """Decorate a command `function(given, **its own options)` so that it also takes the
    options of `sections`' config fields; `given` holds those given on the command line, as
    config sections (the others come from config files and the defaults, see `api`)."""

    def decorate(function):
        generated = [option for section in sections for option in options_of(section, on_build)]
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in list(inspect.signature(function, eval_str=True).parameters.values())[1:]]
        context = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY,
                                    annotation=typer.Context)

        def command(ctx: typer.Context, **values):
            given: dict[str, dict] = {}
            for option in generated:
                value = values.pop(option.parameter.name)
                if ctx.get_parameter_source(option.parameter.name).name == "COMMANDLINE":
                    given.setdefault(option.section, {})[option.field] = option.value(value)
            return function(given, **values)

        parameters = [context, *(option.parameter for option in generated), *own]
        command.__signature__ = inspect.Signature(parameters)
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        command.__name__, command.__doc__ = function.__name__, function.__doc__
        return command

    return decorate

