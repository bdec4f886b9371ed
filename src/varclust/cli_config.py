"""The settings of ``varclust fit``: its flags, generated from the fields of
:class:`~varclust.config.FitConfig` (each carries its help, flag, choices and group), and the
config they make with the data set's and generator's presets, the ``--recipe``, a ``--config``
file and ``--resume``. A new FitConfig field is a new flag, with no edit here."""

from __future__ import annotations

import argparse
import json
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from .config import EM, SCRATCH, FitConfig, upgrade_legacy_keys
from .config_checks import REVIVAL_REFUSED_PRIORS
from .inference.checkpoint import load_latest_checkpoint
from .recipes import RECIPES
from .registry import GENERATORS, GUIDES, LIKELIHOODS, PRIORS

__all__ = [
    "DATASET_DEFAULTS",
    "FLAG_FIELDS",
    "add_config_flags",
    "config_from_args",
    "chosen_settings",
    "typed_fields",
    "with_resumed_settings",
]

#: per-dataset defaults for settings the user does not give (small data need more epochs;
#: on Fashion-MNIST the codes cluster better with longer pretraining: benchmarks/pretraining.py
#: and BENCHMARKS.md). Fashion-MNIST's 10 SVI epochs: from the merged start (the pretrained
#: recipe's there) 30 epochs added 0.008 and 0.001 ACC on seeds 0 and 1 for three times the
#: SVI time (issue 16).
DATASET_DEFAULTS: dict[str, dict] = {
    "digits": {"epochs": 60, "pretrain_epochs": 100, "em_iterations": 60,
               "diffusion_width": 16},
    "fashion-mnist": {"epochs": 10, "pretrain_epochs": 40},
}

#: the FitConfig field that --lr-decay sets, per method
LR_DECAY_FIELD = {"svi": "lr_decay", "em": "em_lr_decay"}

#: the registered names a component field takes
_REGISTERED = {"prior": PRIORS, "guide": GUIDES, "likelihood": LIKELIHOODS,
               "generator": GENERATORS}
_TYPES = {"int": int, "float": float, "str": str, "str | None": str}


def flag_of(f: Field) -> str | None:
    """The flag of a FitConfig field: its own, else ``--`` and the name with dashes."""
    flag = f.metadata.get("flag", "")
    return None if flag is None else flag or "--" + f.name.replace("_", "-")


#: flag -> FitConfig field, for every field with a flag (a bool field's ``--no-`` form too, so
#: that a setting a recipe turns on can be typed off)
FLAG_FIELDS = {flag: f.name for f in fields(FitConfig) if flag_of(f) is not None
               for flag in ([flag_of(f), "--no-" + flag_of(f)[2:]] if f.type == "bool"
                            else [flag_of(f)])}


def _presets(name: str) -> dict[str, Any]:
    """Defaults of a field per generator and per data set (label -> value)."""
    tables = {**{g: e.defaults for g, e in GENERATORS.items()}, **DATASET_DEFAULTS}
    return {label: values[name] for label, values in tables.items() if name in values}


def _shown(value: Any) -> str:
    if isinstance(value, float) and 0 < abs(value) < 1e-2:
        return f"{value:.0e}".replace("e-0", "e-")
    return str(value)


def _hidden(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(h) for h in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--hidden takes widths like 500,500,2000, not {text!r}"
        ) from None


def add_config_flags(parser: argparse.ArgumentParser) -> dict[str | None, Any]:
    """One flag per FitConfig field with a flag, in the field's help group. A field with
    presets (:data:`DATASET_DEFAULTS`, a generator's defaults) parses to None when not typed
    and names them in its help. Returns the groups by title (None: the parser)."""
    groups = {None: parser, SCRATCH: parser.add_argument_group(SCRATCH),
              EM: parser.add_argument_group(EM)}
    for f in fields(FitConfig):
        flag = flag_of(f)
        if flag is None:
            continue
        kw: dict[str, Any] = {"dest": f.name, "help": f.metadata["help"] or None,
                              "default": f.default}
        if f.type == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = _hidden if f.name == "hidden" else _TYPES[f.type]
        choices = f.metadata.get("choices") or _REGISTERED.get(f.name)
        if choices is not None:
            kw["choices"] = sorted(choices)
        elif f.type != "bool":
            kw["metavar"] = flag[2:].upper().replace("-", "_")
        presets = _presets(f.name)
        if presets:
            kw["default"] = None
            kw["help"] = f"{kw['help']} (default {_shown(f.default)}; " + ", ".join(
                f"{label}: {_shown(value)}" for label, value in presets.items()) + ")"
        picked = _recipe_picks(f.name)
        if picked:
            kw["help"] = f"{kw['help']} (" + "; ".join(picked) + ")"
        groups[f.metadata.get("group")].add_argument(flag, **kw)
    return groups


def _recipe_picks(name: str) -> list[str]:
    """What the recipes pick for a field on one method and data set, for its help."""
    return [f"--recipe {recipe} with {method} on {dataset}: {_shown(values[name])}"
            for recipe, r in RECIPES.items()
            for (method, dataset), values in r.per_method_dataset.items() if name in values]


def config_from_args(args: argparse.Namespace) -> FitConfig:
    """The FitConfig of a parsed ``fit`` command. Each field takes, first found: the flag typed,
    the --config file's key, the --recipe (for the settings neither gives; its schedule follows
    their ``epochs``), the data set's preset (none for ``--data``), the generator's (typed or
    from the file), the default; --lr-decay sets the decay of the method that runs."""
    chosen = chosen_settings(args)
    generator = GENERATORS[chosen["generator"]].defaults if chosen.get("generator") else {}
    dataset = None if args.data is not None else args.dataset
    preset = {**generator, **DATASET_DEFAULTS.get(dataset, {})}
    values = {name: chosen.get(name, preset.get(name, FitConfig.__dataclass_fields__[name].default))
              for name in dict.fromkeys(FLAG_FIELDS.values())}
    values.update(chosen)  # a file's key for a field without a flag too
    recipe = RECIPES[args.recipe].settings_for(dataset, chosen)
    if recipe.get("prior", values["prior"]) in REVIVAL_REFUSED_PRIORS or args.labelled_fraction:
        recipe.pop("revive_clusters", None)  # a prior it cannot act on; labels it would break
    # one validation, of the settings with the recipe (a typed flag may need what the recipe
    # sets, e.g. --warm-up-terms the recipe's KL warm-up)
    config = FitConfig(**{**values, **recipe})
    if args.lr_decay is not None:  # the decay of the loop that runs
        config = config.replace(**{LR_DECAY_FIELD[config.method]: args.lr_decay})
    return config


def chosen_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the user chose, by FitConfig field: the flags typed in ``args.argv``, then
    the keys of the --config file (checked as a FitConfig) that no typed flag sets."""
    chosen = {name: getattr(args, name) for name in typed_fields(args.argv)}
    if args.config is not None:
        from_file = FitConfig.from_json(args.config).to_dict()
        given = upgrade_legacy_keys(json.loads(args.config.read_text()))
        chosen.update({k: from_file[k] for k in given if k not in chosen})
    return chosen


def typed_fields(argv: list[str]) -> set[str]:
    """The FitConfig fields of the flags typed in argv."""
    return {FLAG_FIELDS[a.split("=")[0]] for a in argv if a.split("=")[0] in FLAG_FIELDS}


def with_resumed_settings(config: FitConfig, out: Path, args: argparse.Namespace) -> FitConfig:
    """--resume: the run's own settings (from its checkpoint), under those the user chose now
    (typed flags and --config keys, :func:`chosen_settings`; --lr-decay for the run's method);
    a chosen setting that changes a run-defining one is then refused by the fit."""
    if not any((out / n).exists() for n in ("checkpoint.pt", "checkpoint.prev.pt")):
        return config
    saved, _ = load_latest_checkpoint(out / "checkpoint.pt")
    ours = config.to_dict()
    chosen = {k: ours[k] for k in chosen_settings(args)}
    if args.lr_decay is not None:  # the decay of the loop that runs: the run's, unless typed
        method = chosen.get("method", saved["config"].get("method", "svi"))
        chosen[LR_DECAY_FIELD[method]] = args.lr_decay
    return FitConfig.from_dict({**saved["config"], **chosen})
