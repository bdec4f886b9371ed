"""Generic checks of a settings dataclass: each field's type and its fixed choices, with
errors that name the field (used by :class:`varclust.config.FitConfig`)."""

from __future__ import annotations

from dataclasses import fields
from numbers import Integral, Real
from typing import Any

__all__ = ["check_choices", "check_field_types"]

_FIELD_TYPES = {"int": (Integral, int, "an integer"), "float": (Real, float, "a number"),
                "str": (str, str, "a string"),
                "str | None": ((str, type(None)), lambda v: v, "a string or None"),
                "bool": (bool, bool, "True or False")}


def check_field_types(config: Any) -> None:
    """TypeError naming the field when a value has the wrong type (bools are not numbers);
    numpy scalars are turned into Python ones."""
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name == "hidden":
            ok = isinstance(value, (list, tuple)) and all(
                isinstance(h, Integral) and not isinstance(h, bool) for h in value
            )
            want = "a list of integers"
        else:
            kind, cast, want = _FIELD_TYPES[f.type]
            ok = isinstance(value, kind) and (f.type == "bool" or not isinstance(value, bool))
            if ok:
                setattr(config, f.name, cast(value))
        if not ok:
            raise TypeError(f"{f.name} must be {want}, got {value!r}")


def check_choices(config: Any) -> None:
    """ValueError naming the field and its choices when a value is not among the ``choices``
    of its :func:`setting`."""
    for f in fields(config):
        choices, value = f.metadata.get("choices"), getattr(config, f.name)
        if choices and value not in choices:
            named = ", ".join(map(repr, choices[:-1])) + f" or {choices[-1]!r}"
            raise ValueError(f"{f.name} must be {named}, got {value!r}")
