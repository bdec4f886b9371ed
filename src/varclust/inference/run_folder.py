"""Run folders that never lie: one writer at a time, no stale artefacts of an older run, and a
resume that cannot change what the record says was run.

A run folder (``varclust fit --out RUN``) holds the checkpoints, ``metrics.json`` and what the
commands write from them (figures, ``evaluation.json``, ``report/``). :class:`RunLock` keeps a
second process from writing into it; :func:`prepare_run_folder` refuses a new fit into a folder
that holds another run's artefacts unless told to clear them; :func:`data_fingerprint` and
:func:`check_resume_record` make ``resume`` refuse other data or changed run-defining settings.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .checkpoint import CheckpointError, write_atomic

__all__ = [
    "LOCATED_BY_CONTENT",
    "LOCK_NAME",
    "MAY_CHANGE_ON_RESUME",
    "RunFolderError",
    "RunLock",
    "check_resume_record",
    "check_writable",
    "clear_derived",
    "data_fingerprint",
    "holds_run",
    "prepare_run_folder",
    "run_artefacts",
    "same_data",
    "save_arrays",
    "segment_record",
]

LOCK_NAME = ".varclust.lock"
#: the record of a fit with restarts, in its output folder (``varclust.restarts``)
RESTARTS_FILE = "restarts.json"
#: files and folders a run folder's commands write (``fit``, ``evaluate``, ``sample``,
#: ``report``, ``VarClust.save``): ``--overwrite`` removes exactly these
ARTEFACT_PATTERNS = (
    "checkpoint.pt", "checkpoint.prev.pt", "metrics.json", "evaluation.json", "samples.png",
    "samples_*.png", "loss.png", "report", "data.npy", "labels.npy",
    ".*.tmp",  # write_atomic's temporary files, left by a process killed mid-write
)
#: settings a resumed run may change: they do not alter what was already run, and each
#: segment of the run records its own values (``segments`` in ``metrics.json``)
MAY_CHANGE_ON_RESUME = ("epochs", "em_iterations", "device", "checkpoint_every_steps",
                        "max_bad_steps", "sample_steps", "guidance")
#: settings naming a file whose content the data fingerprint holds (by the fingerprint's key):
#: a resume may find the file elsewhere (a moved folder), and its content is compared instead
#: of its path; a checkpoint without that content's hash (older varclust) keeps the path check
LOCATED_BY_CONTENT = {"consensus_file": "targets"}


class RunFolderError(CheckpointError):
    """A run folder that cannot be written: in use by another process, or holding another run."""


#: folders this process holds the lock of, with how many nested holders
_HELD: dict[Path, tuple[int, int]] = {}


class RunLock:
    """An exclusive lock on a run folder (``flock`` on ``RUN/.varclust.lock``, which holds the
    holder's pid and is removed on release), released when the process ends however it ends
    (SIGKILL included: the file is then left, unlocked, and taken over). Re-entrant within a
    process, so the command line and :meth:`VarClust.fit` can both hold it.

    Raises:
        RunFolderError: another process holds the folder; the message names its pid.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).resolve()

    def __enter__(self) -> RunLock:
        if self.folder in _HELD:
            fd, count = _HELD[self.folder]
            _HELD[self.folder] = (fd, count + 1)
            return self
        _require_folder(self.folder)
        self.created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = self._acquire(self.folder / LOCK_NAME)
        except BaseException:
            self._remove_if_created()
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD[self.folder] = (fd, 1)
        return self

    def __exit__(self, *exc: Any) -> None:
        fd, count = _HELD[self.folder]
        if count > 1:
            _HELD[self.folder] = (fd, count - 1)
            return
        del _HELD[self.folder]
        (self.folder / LOCK_NAME).unlink(missing_ok=True)  # while held: see _acquire
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        self._remove_if_created()

    def _remove_if_created(self) -> None:
        """A folder this lock created and nothing was written into is removed again (a fit
        refused for its data leaves no empty run folder)."""
        if self.created and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def _acquire(self, path: Path) -> int:
        """Open and flock ``path``; the holder removes it before unlocking, so a lock taken on
        a file that is no longer at ``path`` is stale and taken again."""
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunFolderError(
                    f"the run folder {self.folder} is in use by another varclust process (pid "
                    f"{holder}); wait for it to finish or choose another --out"
                ) from None
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)


def _require_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(
            f"the output path {folder} is a file, not a folder; choose a folder path for the "
            "run (--out)"
        )


#: what a run folder keeps when a fit resumes it: the run itself; the rest (evaluation.json,
#: report/, figures) describes an older state of the run and is removed
RUN_RECORD = ("checkpoint.pt", "checkpoint.prev.pt", "metrics.json", "data.npy", "labels.npy")


def clear_derived(folder: Path) -> list[str]:
    """Remove what was derived from an older state of the run in ``folder`` (everything
    :func:`run_artefacts` lists but :data:`RUN_RECORD`); returns the names removed."""
    removed = []
    for path in run_artefacts(folder):
        if path.name not in RUN_RECORD:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path.name)
    return removed


def run_artefacts(folder: Path) -> list[Path]:
    """The entries of ``folder`` that a varclust command wrote (sorted)."""
    return sorted({p for pattern in ARTEFACT_PATTERNS for p in folder.glob(pattern)})


def check_writable(out: Path) -> None:
    """Create the folder ``out`` for a run; an error naming the fix when it cannot be written."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"the output path {out} is a file, not a folder; choose a "
                                 "folder path for the run (--out)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create the output folder {out}: {err.strerror}") from None
    if not os.access(out, os.W_OK):
        raise PermissionError(f"the output folder {out} is not writable; choose another --out")


def prepare_run_folder(folder: Path, *, resume: bool, overwrite: bool) -> None:
    """Make ``folder`` ready for a fit, or refuse.

    A new fit (no ``resume``, or ``resume`` with no checkpoint to continue) needs a folder with
    no entries but the lock. ``overwrite`` first removes every artefact of the old run
    (:data:`ARTEFACT_PATTERNS`); files varclust did not write are never removed.

    Raises:
        RunFolderError: the folder holds another run (and no ``overwrite``), or files that are
            not varclust's.
    """
    if not folder.exists():
        return
    _require_folder(folder)
    has_checkpoint = any((folder / n).exists() for n in ("checkpoint.pt", "checkpoint.prev.pt"))
    if resume and has_checkpoint:
        return
    if overwrite:
        clear_derived(folder)
        for name in RUN_RECORD:
            (folder / name).unlink(missing_ok=True)
    entries = sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME)
    if not entries:
        return
    ours = {p.name for p in run_artefacts(folder)}
    foreign = [e for e in entries if e not in ours]
    if foreign:
        raise RunFolderError(
            f"the output folder {folder} holds files varclust did not write "
            f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}); "
            "choose an empty or new folder for --out"
        )
    if resume:
        raise RunFolderError(
            f"the output folder {folder} holds no checkpoint to resume, but files of a run "
            f"({', '.join(entries[:5])}{' ...' if len(entries) > 5 else ''}); start the run "
            "afresh with --overwrite (overwrite=True) instead of --resume, or choose another --out"
        )
    raise RunFolderError(
        f"the output folder {folder} already holds a run ({', '.join(entries[:5])}"
        f"{' ...' if len(entries) > 5 else ''}); continue it with --resume (resume=True), "
        "replace it with --overwrite (overwrite=True; every file of the old run is removed), "
        "or choose another --out"
    )


def holds_run(folder: Path, segments: list[dict[str, Any]],
              fingerprint: dict[str, Any] | None) -> bool:
    """Whether ``folder``'s ``metrics.json`` records this run: the same segments and data."""
    try:
        record = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return record.get("segments") == segments and record.get("data") == fingerprint


def data_fingerprint(x: Tensor, cluster: Tensor | None = None,
                     cluster_mask: Tensor | None = None,
                     targets: np.ndarray | None = None) -> dict[str, Any]:
    """What identifies the data of a fit: N, the shape of a datum and a BLAKE2 hash of the
    float32 values of x (N, ...); for a semi-supervised fit also ``labelled``: how many data
    the model is given labels for, and a hash of which ones and their labels (both (N,)); for a
    fit taught per-datum targets (the consensus term's (N, K) file) ``targets``: their hash."""
    values = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
    record: dict[str, Any] = {
        "num_data": int(values.shape[0]),
        "shape": [int(s) for s in values.shape[1:]],
        "hash": _hash(values),
    }
    if cluster_mask is not None:
        mask = cluster_mask.detach().cpu().numpy()
        given = np.where(mask, cluster.detach().cpu().numpy(), -1).astype(np.int64)
        record["labelled"] = {"count": int(mask.sum()), "hash": _hash(given)}
    if targets is not None:
        record["targets"] = _hash(np.asarray(targets, dtype=np.float32))
    return record


def _hash(values: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(values).tobytes(), digest_size=16).hexdigest()


def check_resume_record(
    saved_config: dict[str, Any], config: dict[str, Any], saved_data: dict[str, Any] | None,
    data: dict[str, Any], path: Path,
) -> None:
    """Refuse a resume that would make the run's record false: other data (N, shape or hash),
    or a run-defining setting (every FitConfig field not in :data:`MAY_CHANGE_ON_RESUME`) that
    differs from the checkpoint's; a file setting of :data:`LOCATED_BY_CONTENT` is compared by
    the content the fingerprints hold, where the checkpoint's holds it, so a moved run folder
    resumes. A checkpoint without a fingerprint (older varclust) is only checked on its
    settings.

    Raises:
        CheckpointError: naming every difference and the fix.
    """
    by_content = {k: key for k, key in LOCATED_BY_CONTENT.items()
                  if saved_data is not None and key in saved_data}
    diffs = [f"{k}: checkpoint {saved_config[k]!r} vs {config[k]!r}" for k in config
             if k in saved_config and k not in MAY_CHANGE_ON_RESUME and k not in by_content
             and _plain(saved_config[k]) != _plain(config[k])]
    diffs += [f"{k}: the checkpoint's file held other content than {config[k]!r} (hash "
              f"{saved_data[key][:12]} vs {str(data.get(key))[:12]})"
              for k, key in by_content.items() if saved_data[key] != data.get(key)]
    if saved_data is not None and not same_data(saved_data, data):
        diffs.append(f"data: checkpoint N={saved_data['num_data']} "
                     f"{tuple(saved_data['shape'])} hash {saved_data['hash'][:12]} vs "
                     f"N={data['num_data']} {tuple(data['shape'])} hash {data['hash'][:12]}")
    if saved_data is not None and saved_data.get("labelled") != data.get("labelled"):
        diffs.append(f"labelled data: checkpoint {_labelled(saved_data)} vs {_labelled(data)}")
    if diffs:
        raise CheckpointError(
            f"resuming {path} would make its record false ({'; '.join(diffs)}); resume with "
            f"the same data and settings (only {', '.join(MAY_CHANGE_ON_RESUME)} may change), "
            "or start a new run with --overwrite or another --out"
        )


def segment_record(config: dict[str, Any], start_epoch: int, phase: str) -> dict[str, Any]:
    """One segment of a run (the fit up to an interruption, or a resume): where it started and
    the values of the settings that may change between segments."""
    return {"start_epoch": start_epoch, "start_phase": phase,
            **{k: config[k] for k in MAY_CHANGE_ON_RESUME if k in config}}


def save_arrays(folder: Path, X: Any, y: Any = None) -> dict[str, str]:
    """Keep the data of a fit in its run folder (``data.npy``, ``labels.npy``; written
    atomically) so that ``varclust evaluate`` / ``report`` can read them; returns the metadata
    that records them (``{"data": "data.npy", "labels": "labels.npy"}``, paths relative to
    the folder). X (N, ...) floats, y (N,) integers or None."""
    meta = {}
    for name, key, values in (("data.npy", "data", X), ("labels.npy", "labels", y)):
        if values is None:
            continue
        buffer = io.BytesIO()
        np.save(buffer, torch.as_tensor(values).cpu().numpy(),
                allow_pickle=False)
        write_atomic(folder / name, buffer.getvalue())
        meta[key] = name
    return meta


def same_data(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two :func:`data_fingerprint` records are of the same data (labels aside)."""
    keys = ("num_data", "shape", "hash")
    return [a.get(k) for k in keys] == [b.get(k) for k in keys]


def _labelled(record: dict[str, Any]) -> str:
    given = record.get("labelled")
    return f"{given['count']} labels (hash {given['hash'][:12]})" if given else "no labels"


def _plain(value: Any) -> Any:
    """Lists and tuples compare equal (a checkpoint stores tuples as lists)."""
    return list(value) if isinstance(value, (list, tuple)) else value
