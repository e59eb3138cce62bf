"""Value checks shared by the config dataclasses: messages name the rule and echo the value."""

from __future__ import annotations

import difflib
import math
import types
import typing

from edgefire.errors import EdgefireError


def choice(value: str, options, flag: str) -> str:
    """`value` if it is one of `options`; otherwise an error naming a close valid one."""
    if value in options:
        return value
    close = difflib.get_close_matches(str(value), list(options), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise EdgefireError(f"unknown {flag} {value!r}: {hint}(choose from {', '.join(options)})")


def in_range(value, low, high, flag: str, low_open: bool = False, high_open: bool = False):
    """`value` if low <= value <= high (strict where open); otherwise an error echoing it.

    NaN and infinities are refused whatever the range: no comparison would catch NaN.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise EdgefireError(f"{flag} must be a finite number (got {value})")
    too_low = value is not None and low is not None and (value <= low if low_open else value < low)
    too_high = (value is not None and high is not None
                and (value >= high if high_open else value > high))
    if too_low or too_high:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        rule = " and ".join(r for r in (lo, hi) if r)
        raise EdgefireError(f"{flag} must be {rule} (got {value})")
    return value


def accepts(hint, value) -> bool:
    """Whether a TOML value may be given for a config field of type `hint`: an int for a
    float, a list for a tuple; a bool only for a bool; "127.5" or "1,2,3" for the channels."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(accepts(arg, value) for arg in typing.get_args(hint))
    if hint is type(None) or isinstance(value, bool):
        return value is None if hint is type(None) else hint is bool
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        if isinstance(value, list | tuple):
            return all(accepts(item, v) for v in value)
        return item is float and isinstance(value, int | float | str)
    return isinstance(value, int | float) if hint is float else isinstance(value, hint)


def type_name(hint) -> str:
    """`int`, `tuple[str, ...]`; an optional field's type is said without the None."""
    parts = typing.get_args(hint) if typing.get_origin(hint) is types.UnionType else (hint,)
    return " or ".join(p.__name__ if typing.get_origin(p) is None else str(p)
                       for p in parts if p is not type(None))
