"""Declared options: every setting is one dataclass field that carries its own help text and its
valid range, so that one function checks them all and the command line, the resume rules and the
ablation arms are derived from the same declaration instead of being listed again.

    lrn: bool = option(True, "local response normalisation (§3.3)",
                       arms={"no-lrn": (False, "no LRN", "LRN: top-1 −1.4% (§3.3)")})

Metadata a field may carry (all optional):
    help        the flag's help text
    choices     the allowed values
    low, high   the allowed range (inclusive, unless low_open / high_open)
    cli         False: not a command-line flag (set from the data, e.g. in_channels)
    variants    the network variants the option applies to (default: the paper's only)
    arms        ablation arms: {name: (value, what changes, what the paper reports)}
    resumable   True: may change when a run is resumed: where and how it runs, or how long
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import field
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from .errors import AlexNetError


def option(default: Any, help: str = "", *, choices=None, low=None, high=None,
           low_open: bool = False, high_open: bool = False, cli: bool = True,
           variants: tuple = ("paper",), arms: dict | None = None, resumable: bool = False):
    """A dataclass field with its checks attached (see the module doc)."""
    meta = dict(help=help, choices=choices, low=low, high=high, low_open=low_open,
                high_open=high_open, cli=cli, variants=variants, arms=arms or {},
                resumable=resumable)
    return field(default=default, metadata=meta)


def base_type(tp) -> tuple[type, bool]:
    """(the type, whether None is allowed) for a hint such as int or Optional[str]."""
    if get_origin(tp) is Union and type(None) in get_args(tp):
        return next(a for a in get_args(tp) if a is not type(None)), True
    return tp, False


def check_value(name: str, value: Any, tp, meta) -> None:
    """Raise AlexNetError(option=name) unless `value` fits the field's type and range."""
    tp, optional = base_type(tp)
    if value is None and optional:
        return
    ok_type = {bool: lambda v: isinstance(v, bool),
               int: lambda v: isinstance(v, int) and not isinstance(v, bool),
               float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
               str: lambda v: isinstance(v, str)}.get(tp, lambda v: True)
    if not ok_type(value):
        raise AlexNetError(f"{name} must be of type {tp.__name__}, got {value!r}", option=name)
    if tp is str and not value.strip():  # `--out "$DIR"`, DIR unset: not the current directory
        raise AlexNetError(f"{name} is an empty string; expected {meta.get('help') or 'a value'}",
                           option=name)
    if tp is int and not -2**63 <= value < 2**63:  # torch, numpy and JSON readers stop there
        raise AlexNetError(f"{name} is a number too large (past int64): {value}", option=name)
    if tp is float and not math.isfinite(value):
        raise AlexNetError(f"{name} must be a finite number, got {value!r}", option=name)
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise AlexNetError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}",
                           option=name)
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value < low or (meta.get("low_open") and value == low)):
        raise AlexNetError(f"{name} must be {'>' if meta.get('low_open') else '>='} {low}, "
                           f"got {value!r}", option=name)
    if high is not None and (value > high or (meta.get("high_open") and value == high)):
        raise AlexNetError(f"{name} must be {'<' if meta.get('high_open') else '<='} {high}, "
                           f"got {value!r}", option=name)


def path_arg(text: str) -> str:
    """The argparse type of a file or directory argument. A blank one (`--out "$DIR"` with DIR
    unset) is refused: read as given it would be the current directory, and as not given a
    default the user did not ask for (--weights "" would train from scratch)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty string; give a path")
    return text


def check(obj) -> None:
    """Check every field of a dataclass instance against its declaration."""
    hints = get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        check_value(f.name, getattr(obj, f.name), hints[f.name], f.metadata)


def names(cls, **where) -> list[str]:
    """The fields of `cls` whose metadata match, e.g. names(TrainConfig, resumable=True)."""
    return [f.name for f in dataclasses.fields(cls)
            if all(f.metadata.get(k) == v for k, v in where.items())]


def arms(cls) -> dict[str, tuple[dict, str, str]]:
    """Every ablation arm declared on the fields of `cls`: {arm: ({field: value}, change, paper)}."""
    out = {}
    for f in dataclasses.fields(cls):
        for arm, (value, change, paper) in f.metadata.get("arms", {}).items():
            out[arm] = ({f.name: value}, change, paper)
    return out


__all__ = ["option", "check", "check_value", "path_arg", "names", "arms", "base_type", "Optional"]
