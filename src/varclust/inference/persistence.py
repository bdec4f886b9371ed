"""A fit on disk: the checkpoint's payload and ``metrics.json``, the compatibility check of a
checkpoint with a model, and a fit's state read back (beside :mod:`.checkpoint`, which writes
and reads the files atomically)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..config import STRUCTURAL_KEYS, FitConfig
from .checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_latest_checkpoint,
    previous_path,
    save_checkpoint,
    write_atomic,
)
from .moves import moves_outside_elbo
from .regularisers import terms_outside_elbo
from .run_folder import (
    RESTARTS_FILE,
    RunLock,
    check_resume_record,
    clear_derived,
    holds_run,
    prepare_run_folder,
    save_arrays,
)

__all__ = [
    "CHECKPOINT_NAME",
    "METRICS_NAME",
    "FitRecord",
    "check_compatible",
    "checkpoint_payload",
    "read_fit",
    "read_resume_state",
    "restore_fitted",
    "restore_record",
    "save_fit",
    "save_fitted",
]

log = logging.getLogger("varclust")

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"


class FitRecord(Protocol):
    """What a fit keeps and writes (:class:`varclust.VarClust` is one)."""

    config: FitConfig
    data_shape: tuple[int, ...] | None
    model: nn.Module | None
    guide: nn.Module | None
    history: list[dict[str, float]]
    pretrain_losses: list[float]
    segments: list[dict[str, Any]]
    data_fingerprint_: dict[str, Any] | None
    metadata_: dict[str, Any]
    cluster_sizes_: np.ndarray | None
    latent_reliance: float | None
    collapse_warning_: str | None


def checkpoint_payload(fit: FitRecord, phase: str, epoch: int, trainer: Any, metadata,
                       pretrainer: dict | None = None) -> dict:
    """Everything a checkpoint holds: settings, modules, the trainer's and RNG state, records.
    ``phase``: "pretrain", "init", "train" or "done"; ``epoch``: epochs (EM iterations) done."""
    return {
        "varclust_version": __version__,
        "torch_version": str(torch.__version__),
        "config": fit.config.to_dict(),
        "data_shape": list(fit.data_shape),
        "model": fit.model.state_dict(),
        "guide": fit.guide.state_dict(),
        "trainer": trainer.state_dict() if trainer is not None else {},
        "phase": phase,
        "epoch": epoch,
        "history": fit.history,
        "pretrain_losses": fit.pretrain_losses,
        "rng": capture_rng_state(),
        "metadata": dict(metadata or {}),
        "data_fingerprint": fit.data_fingerprint_,
        "segments": fit.segments,
        "cluster_sizes": _as_list(fit.cluster_sizes_),
        "latent_reliance": fit.latent_reliance,
        "pretrainer": pretrainer or {},
    }


def save_fit(fit: FitRecord, path: Path, phase: str, epoch: int, trainer: Any, metadata,
             pretrainer: dict | None = None) -> None:
    """Write the checkpoint ``path`` and ``metrics.json`` beside it, each atomically."""
    save_checkpoint(path, checkpoint_payload(fit, phase, epoch, trainer, metadata, pretrainer))
    write_metrics(fit, path.parent, metadata)


def write_metrics(fit: FitRecord, folder: Path, metadata) -> None:
    """Write ``folder/metrics.json`` (atomically): the fit's settings, records and metadata."""
    summary = {
        "config": fit.config.to_dict(),
        "metadata": dict(metadata or {}),
        "pretrain_losses": fit.pretrain_losses,
        # terms added to the training objective that are not part of the ELBO
        "objective_terms_outside_elbo": terms_outside_elbo(fit.config),
        # moves on the parameters between epochs that are not steps on the ELBO
        "moves_outside_elbo": moves_outside_elbo(fit.config),
        "history": fit.history,
        "data": fit.data_fingerprint_,
        "segments": fit.segments,
        "cluster_sizes": _as_list(fit.cluster_sizes_),
        "latent_reliance": fit.latent_reliance,
    }
    write_atomic(folder / METRICS_NAME, json.dumps(summary, indent=2).encode())


def check_compatible(config: FitConfig, state: dict, data_shape: tuple, path: Path) -> None:
    """CheckpointError unless the checkpoint ``state`` holds a model of ``config``'s structure
    (:data:`~varclust.config.STRUCTURAL_KEYS`) for data of ``data_shape``."""
    ours = config.to_dict()
    # keys added after a checkpoint was written take their defaults
    saved = {**FitConfig().to_dict(), **state["config"]}
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs {ours[k]!r}" for k in STRUCTURAL_KEYS
             if saved.get(k) != ours[k]]
    if tuple(state["data_shape"]) != tuple(data_shape):
        diffs.append(f"data shape: checkpoint {tuple(state['data_shape'])} vs {data_shape}")
    if diffs:
        raise CheckpointError(
            f"{path} was written by a different model ({'; '.join(diffs)}); "
            "use a fresh out_dir or the same settings"
        )


def read_resume_state(fit: FitRecord, out: Path | None, data_shape: tuple,
                      device: torch.device, main: bool) -> dict | None:
    """``resume=True``: the checkpoint in ``out`` (loaded onto ``device``) after checking it
    against the fit's model, settings and data (:func:`~.run_folder.check_resume_record`); the
    run's derived files are removed (by the main process, ``main``). None, with a warning,
    when ``out`` holds no checkpoint."""
    if out is None:
        raise ValueError("resume=True needs out_dir, where the checkpoint lives")
    path = out / CHECKPOINT_NAME
    if not (path.exists() or previous_path(path).exists()):
        log.warning("no checkpoint in %s: starting a new run", out)
        return None
    state, _ = load_latest_checkpoint(path, map_location=device)
    check_compatible(fit.config, state, data_shape, path)
    check_resume_record(state["config"], fit.config.to_dict(), state.get("data_fingerprint"),
                        fit.data_fingerprint_, path)
    if main:  # evaluation.json, report/ ... describe an older state
        clear_derived(out)
    return state


def restore_record(fit: FitRecord, state: dict) -> None:
    """Load the modules and the records of a checkpoint ``state`` into a built fit."""
    fit.model.load_state_dict(state["model"])
    fit.guide.load_state_dict(state["guide"])
    fit.history = list(state["history"])
    fit.pretrain_losses = list(state["pretrain_losses"])
    fit.segments = list(state.get("segments", []))
    fit.latent_reliance = state.get("latent_reliance")


def restore_fitted(fit: FitRecord, state: dict) -> None:
    """:func:`restore_record`, and what a run records beside it (data fingerprint, metadata,
    cluster sizes): a built fit becomes the one the checkpoint ``state`` holds."""
    restore_record(fit, state)
    fit.data_fingerprint_ = state.get("data_fingerprint")
    fit.metadata_ = dict(state.get("metadata", {}))
    if state.get("cluster_sizes") is not None:
        fit.cluster_sizes_ = np.asarray(state["cluster_sizes"])


def _refuse_restarts_folder(folder: Path) -> None:
    """FileNotFoundError naming the kept fit when ``folder`` holds restarts, not a run."""
    checkpoint = folder / CHECKPOINT_NAME
    record = folder / RESTARTS_FILE
    if checkpoint.exists() or previous_path(checkpoint).exists() or not record.exists():
        return
    written = json.loads(record.read_text())
    chosen = written.get("kept_folder", written.get("chosen_folder"))
    raise FileNotFoundError(
        f"{folder} holds restarts, not one run: the fit kept by {RESTARTS_FILE} is "
        f"{folder / chosen if chosen else 'named there'}; give that folder")


def read_fit(path: Path, device: str) -> tuple[dict, FitConfig]:
    """The checkpoint ``path`` (a file, or a run folder's) and its config for ``device``;
    when the newest checkpoint is damaged, its previous good copy, with a logged warning."""
    if path.is_dir():
        _refuse_restarts_folder(path)
        path = path / CHECKPOINT_NAME
    state, path = load_latest_checkpoint(path, map_location="cpu")
    if state["phase"] == "pretrain":
        log.warning("%s stopped inside autoencoder pretraining (%d epochs done): its "
                    "clusters are not fitted yet; continue it with --resume (resume=True)",
                    path, len(state["pretrain_losses"]))
    try:
        config = FitConfig.from_dict({**state["config"], "device": device})
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path} holds an invalid config: {err}") from None
    return state, config


def save_fitted(fit: FitRecord, path: Path, X: Any = None, y: Any = None, *,
                overwrite: bool = False) -> None:
    """``VarClust.save``: a checkpoint file when ``path`` has a suffix, else a run folder
    (locked while written; another run's folder only with ``overwrite``) that keeps data X
    (N, ...) and labels y (N,) when given."""
    if path.suffix and not path.is_dir():
        if X is not None or y is not None:
            raise ValueError(f"{path} is a checkpoint file; X and y are kept only in a run "
                             "folder: save to a path without a suffix")
        save_checkpoint(path, checkpoint_payload(fit, "done", len(fit.history), None, None))
        return
    with RunLock(path):
        own = holds_run(path, fit.segments, fit.data_fingerprint_)
        if not own:
            prepare_run_folder(path, resume=False, overwrite=overwrite)
        meta = {**fit.metadata_, **save_arrays(path, X, y)}
        state = _own_checkpoint(path, fit) if own else None
        if state is None:
            save_fit(fit, path / CHECKPOINT_NAME, "done", len(fit.history), None, meta)
            return
        # the fit's own run folder: its checkpoint keeps what a resume needs (the trainer's
        # and RNG state, its phase); only the metadata change
        state["metadata"] = meta
        save_checkpoint(path / CHECKPOINT_NAME, state)
        write_metrics(fit, path, meta)


def _own_checkpoint(folder: Path, fit: FitRecord) -> dict | None:
    """The checkpoint of ``folder`` when it holds the fit as it is now (the same epochs and
    pretraining), else None."""
    try:
        state, _ = load_latest_checkpoint(folder / CHECKPOINT_NAME, map_location="cpu")
    except (OSError, CheckpointError):
        return None
    same = (len(state["history"]) == len(fit.history)
            and len(state["pretrain_losses"]) == len(fit.pretrain_losses))
    return state if same else None


def _as_list(values: np.ndarray | None) -> list[int] | None:
    return None if values is None else [int(v) for v in values]
