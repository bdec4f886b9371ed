"""What the ``varclust`` command needs besides its parser and commands: help that shows the
defaults, the data a fit reads from its flags, and the run lock of the commands that write into
a run folder."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import numpy as np

from .analysis.run_data import load_arrays
from .data.datasets import ImageDataset, load_dataset
from .inference.run_folder import RunLock

__all__ = ["HelpFormatter", "add_data_flags", "data_arrays", "fit_data", "heldout_array",
           "holding_run", "show_defaults"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except where there is none (None, a flag off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Give the options without a help text one, so that --help lists their defaults too."""
    for action in parser._actions:
        if action.help is None and action.default is not None and action.default is not False:
            action.help = "default: %(default)s"


def fit_data(args: argparse.Namespace) -> tuple[ImageDataset, dict]:
    """The data to fit (--data X.npy [--labels y.npy], else --dataset) and the metadata that
    records them in the run folder (see :mod:`varclust.analysis.run_data`)."""
    if data_arrays(args) is None:
        data = load_dataset(args.dataset, root=args.data_root, download=args.download)
        return data, {"dataset": data.name, "data_root": str(args.data_root or ""),
                      "labelled_fraction": args.labelled_fraction}
    data = load_arrays(args.data, args.labels)
    meta = {"dataset": data.name, "data": str(args.data.resolve()),
            "labelled_fraction": args.labelled_fraction}
    if args.labels is not None:
        meta["labels"] = str(args.labels.resolve())
    return data, meta


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    """--data / --labels of `evaluate` and `report`: the data of a run that records none."""
    parser.add_argument("--data", type=Path,
                        help="the run's data as a .npy file, when the run folder records none")
    parser.add_argument("--labels", type=Path, help="with --data: their labels (.npy)")


def data_arrays(args: argparse.Namespace) -> tuple[Path, Path | None] | None:
    """(X.npy, y.npy or None) from --data / --labels, or None when --data is not given."""
    if args.data is None:
        if args.labels is not None:
            raise ValueError("--labels goes with --data")
        return None
    return args.data, args.labels


def heldout_array(args: argparse.Namespace) -> np.ndarray | None:
    """The held-out data (M, ...) of `report --heldout NPY`, or None when not given."""
    if args.heldout is None:
        return None
    if not args.compare:
        raise ValueError("--heldout ranks the runs of --compare on held-out data; give the "
                         "runs to compare with --compare RUN ...")
    if not args.heldout.is_file():
        raise ValueError(f"--heldout {args.heldout}: no such file; give a .npy array of data "
                         "none of the runs was trained on")
    try:
        return np.load(args.heldout, allow_pickle=False)
    except ValueError as error:
        raise ValueError(f"--heldout {args.heldout} is not a .npy array ({error}); save the "
                         "held-out data with numpy.save") from error


def holding_run(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """`evaluate` and `sample` write into the run folder: they hold its lock (a running fit's
    folder is refused); `fit` takes it itself, `report` only reads the run."""
    if args.command in ("evaluate", "sample") and args.run.is_dir():
        return RunLock(args.run)
    return contextlib.nullcontext()
