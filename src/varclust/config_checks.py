"""Checks of a settings dataclass, with errors that name the field and the fix (used by
:class:`varclust.config.FitConfig`): each field's type and fixed choices (generic), and the
settings of the terms outside the ELBO with their KL warm-up."""

from __future__ import annotations

from dataclasses import fields
from numbers import Integral, Real
from typing import Any

__all__ = ["check_choices", "check_field_types", "check_terms_outside_elbo"]

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


def check_terms_outside_elbo(config: Any) -> None:
    """ValueError for a negative weight of a term outside the ELBO or warm-up length, a
    non-positive adversarial radius, fewer than one neighbour, or ``warm_up_terms`` without a
    KL warm-up of the method that runs (``kl_warmup_iterations`` in EM, else epochs). A term's
    own parameters (``neighbours``, ``adversarial_radius``, ``cluster_balance``) are inert while
    its weight is 0, so a recipe's values survive a typed 0."""
    for name in ("cluster_information", "augmentation_consistency", "virtual_adversarial",
                 "neighbour_consistency", "kl_warmup_epochs"):  # 0 turns one off
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0 (0: off), got {getattr(config, name)}")
    warmup = "kl_warmup_iterations" if config.method == "em" else "kl_warmup_epochs"
    if config.warm_up_terms and not getattr(config, warmup):
        raise ValueError(f"warm_up_terms scales the terms outside the ELBO by the KL warm-up's "
                         f"weight, but {warmup} is 0 (no warm-up): set {warmup} > 0 or leave "
                         "warm_up_terms off")
    if not config.adversarial_radius > 0:
        raise ValueError(f"adversarial_radius must be > 0, got {config.adversarial_radius}")
    if config.neighbours < 1:
        raise ValueError(f"neighbours must be >= 1, got {config.neighbours}")
