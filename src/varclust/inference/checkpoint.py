"""Checkpoints: written atomically, read without unpickling arbitrary objects.

A checkpoint is written to a temporary file in its folder, fsynced and renamed over the old one;
the old one is first kept as ``<name>.prev<suffix>`` (``checkpoint.prev.pt``), so a good
checkpoint survives a crash, a full disk or a checkpoint that comes out unreadable. A payload
holding NaN or infinite numbers is refused before anything is written.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import pickle
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "UnsafeCheckpointError",
    "capture_rng_state",
    "load_checkpoint",
    "load_latest_checkpoint",
    "previous_path",
    "restore_rng_state",
    "save_checkpoint",
    "write_atomic",
]

CHECKPOINT_FORMAT = "varclust-checkpoint-v1"

log = logging.getLogger("varclust")


_UMASK = os.umask(0)
os.umask(_UMASK)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupt, unsafe, or from another model."""


class UnsafeCheckpointError(CheckpointError):
    """A file carrying pickled Python objects: refused, and nothing in it was run."""


def previous_path(path: str | os.PathLike) -> Path:
    """Where the previous good copy of ``path`` is kept (``checkpoint.prev.pt``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _fsync_folder(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _keep_previous(path: Path) -> None:
    """Make ``previous_path(path)`` a complete copy of ``path`` (a hard link where possible)."""
    prev = previous_path(path)
    tmp = prev.with_name(f".{prev.name}.tmp")
    try:
        if tmp.exists():
            tmp.unlink()
        try:
            os.link(path, tmp)
        except OSError:  # a file system without hard links
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                dst.write(src.read())
                dst.flush()
                os.fsync(dst.fileno())
        os.replace(tmp, prev)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | os.PathLike, data: bytes, keep_previous: bool = False) -> None:
    """Write bytes to ``path`` through a temporary file in the same folder, fsync, rename.

    The old file stays whole until the new one is complete; with ``keep_previous`` it is kept
    afterwards as :func:`previous_path`. Any failure (full disk, no permission) leaves ``path``
    as it was and raises an ``OSError`` that names the file and the fix.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            _keep_previous(path)
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(path.parent)
    except OSError as err:
        reason = err.strerror or str(err)
        hint = (
            "free some disk space" if err.errno in (errno.ENOSPC, errno.EDQUOT) else
            "check the folder's permissions"
        )
        raise OSError(
            err.errno,
            f"could not write {path}: {reason}; the file was left as it was before; "
            f"{hint} or choose another output folder",
        ) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _nonfinite_entries(value: Any, where: str = "") -> list[str]:
    """Keys (as paths like ``model/prior.loc``) of floating tensors holding NaN or inf."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return [where or "<payload>"]
        return []
    if isinstance(value, dict):
        return [bad for k, v in value.items() for bad in _nonfinite_entries(v, f"{where}/{k}")]
    if isinstance(value, (list, tuple)):
        return [bad for i, v in enumerate(value) for bad in _nonfinite_entries(v, f"{where}/{i}")]
    return []


def save_checkpoint(
    path: str | os.PathLike, payload: dict[str, Any], keep_previous: bool = True
) -> None:
    """Save a dict of tensors and plain Python values atomically (``torch.save`` format).

    The file already at ``path`` is kept as :func:`previous_path` (unless ``keep_previous`` is
    False). A payload with non-finite tensors is refused: a NaN checkpoint never replaces a good
    one.

    Raises:
        CheckpointError: the payload holds NaN or infinite values (nothing is written).
        OSError: the file could not be written (``path`` is left as it was).
    """
    bad = _nonfinite_entries(payload)
    if bad:
        shown = ", ".join(b.lstrip("/") for b in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise CheckpointError(
            f"refused to write {path}: {len(bad)} tensors hold NaN or infinite values ({shown}); "
            "the last good checkpoint was kept"
        )
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, buffer)
    write_atomic(path, buffer.getvalue(), keep_previous=keep_previous)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)``: no pickled code can run.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is corrupt, carries pickled objects, or is not a varclust
            checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        needs = re.search(r"GLOBAL (\S+)", str(err))
        if needs:
            raise UnsafeCheckpointError(
                f"refused to load {path}: it carries pickled Python objects (it needs "
                f"{needs.group(1)}) that safe weights-only loading does not run, so it was not "
                "written by varclust; nothing in it was executed"
            ) from None
        stopped = re.search(r"(Unsupported operand \d+|invalid load key[^\n]*)", str(err))
        raise CheckpointError(
            f"{path} is not a checkpoint that can be read safely (the weights-only unpickler "
            f"stopped at: {stopped.group(1) if stopped else 'an unknown instruction'}); it is "
            "corrupt or not from varclust, and nothing in it was executed"
        ) from None
    except Exception as err:  # noqa: BLE001 - damaged bytes trip the unpickler in many ways
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt or truncated: "
            f"{type(err).__name__}: {err})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a varclust checkpoint (format {CHECKPOINT_FORMAT})")
    return payload


def load_latest_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[dict, Path]:
    """Load ``path``, or its previous copy when ``path`` is missing or unreadable.

    Returns the payload and the file it came from. A file refused as unsafe is never passed
    over silently: that error is raised even when a previous copy exists.
    """
    path = Path(path)
    prev = previous_path(path)
    try:
        return load_checkpoint(path, map_location), path
    except (FileNotFoundError, CheckpointError) as err:
        if isinstance(err, UnsafeCheckpointError) or not prev.exists():
            raise
        try:
            previous = load_checkpoint(prev, map_location)
        except CheckpointError as prev_err:
            raise CheckpointError(
                f"{err}; and the previous copy is no better: {prev_err}. The run cannot be "
                "loaded or resumed: fit it again into the same folder with --overwrite "
                "(overwrite=True in Python), or into another one"
            ) from None
        log.warning("%s; resuming from the previous checkpoint %s", err, prev)
        return previous, prev


def capture_rng_state() -> dict[str, Any]:
    """Every RNG the fit draws from, as tensors and plain values (weights-only loadable)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured. The state may have been loaded onto a
    GPU (``map_location="cuda"``): RNG states are taken back to the CPU, as PyTorch and numpy
    need them; a GPU's state is restored for the GPUs this machine has."""
    torch.set_rng_state(state["torch"].cpu())
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
         n["cached_gaussian"])
    )
    if "cuda" in state and torch.cuda.is_available():
        saved = [s.cpu() for s in state["cuda"]][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(saved)
