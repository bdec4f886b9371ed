"""The data of a run folder: a named data set (``varclust fit --dataset``), or the user's own
arrays (``varclust fit --data X.npy --labels y.npy``, or ``vc.save(run, X, y)``, which keeps
them in the folder as ``data.npy`` / ``labels.npy``).

The record is the checkpoint's ``metadata``: ``{"dataset": name, "data_root": ...}`` or
``{"data": path, "labels": path}`` (paths relative to the run folder, or absolute).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.datasets import ImageDataset, load_dataset
from ..data.validation import as_image_tensor
from ..inference.run_folder import data_fingerprint, same_data

__all__ = ["load_arrays", "load_run", "run_dataset"]

log = logging.getLogger("varclust")


def load_arrays(data: str | os.PathLike, labels: str | os.PathLike | None = None,
                name: str | None = None) -> ImageDataset:
    """Images X (N, D), (N, H, W) or (N, C, H, W) of floats in [0, 1] from a ``.npy`` file,
    and optional integer labels y (N,) from another.

    Raises:
        FileNotFoundError, ValueError, TypeError: a missing file, or arrays that do not fit
            (the message names the file).
    """
    data = Path(data)
    try:
        x = np.load(data, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"no data file {data}: pass an existing .npy file") from None
    except ValueError as err:
        raise ValueError(f"{data} is not a plain .npy array: {err}") from None
    images = as_image_tensor(x, name=str(data))
    y = None
    if labels is not None:
        y = np.load(labels, allow_pickle=False)
        if y.shape != (len(images),) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"{labels} must hold {len(images)} integer labels (shape ({len(images)},)), "
                f"got dtype {y.dtype} and shape {y.shape}"
            )
        y = torch.as_tensor(y, dtype=torch.int64)
    return ImageDataset(images=images, labels=y, name=name or data.stem)


def run_dataset(run: Path, meta: dict[str, Any], data_root: Path | None = None
                ) -> ImageDataset:
    """The data a run was fitted to, as its checkpoint's ``metadata`` records them.

    Raises:
        ValueError: the run records no data (a Python fit with ``out_dir``): the message says
            how to give them.
    """
    if "data" in meta:
        labels = meta.get("labels")
        return load_arrays(run / meta["data"], run / labels if labels else None,
                           name=meta.get("dataset"))
    if "dataset" not in meta:
        raise ValueError(
            f"{run} does not record its data set (runs written by `varclust fit`, or by "
            "vc.save(run, X, y) in Python, do); give them with --data X.npy [--labels y.npy], "
            "save the fit with vc.save(run, X, y), or build the figures in Python with "
            "varclust.analysis"
        )
    root = data_root or (Path(meta["data_root"]) if meta.get("data_root") else None)
    return load_dataset(meta["dataset"], root=root, download=False)


def load_run(run: str | os.PathLike, data_root: str | os.PathLike | None = None,
             device: str = "auto", arrays: Sequence[str | os.PathLike | None] | None = None,
             **components: Any):
    """The fitted model of a run folder and the data it was fitted to: (VarClust, ImageDataset).

    ``arrays`` = (X.npy, y.npy or None) gives the data instead of the run's record (for a run
    folder that records none). ``components``: your own prior, guide, ... objects, as
    :meth:`VarClust.load` takes them. Warns when the data do not match the fingerprint
    recorded at fitting time.
    """
    from ..estimator import VarClust

    run = Path(run)
    vc = VarClust.load(run, device=device, **components)
    meta = vc.metadata_
    if arrays is not None:
        meta = {"dataset": Path(arrays[0]).stem, "data": str(Path(arrays[0]).resolve()),
                **({"labels": str(Path(arrays[1]).resolve())} if arrays[1] else {})}
    data = run_dataset(run, meta, Path(data_root) if data_root else None)
    saved = vc.data_fingerprint_
    if saved is not None and not same_data(saved, data_fingerprint(as_image_tensor(data.images))):
        log.warning("the data of %s differ from those it was fitted to (N=%d, hash %s); the "
                    "scores are not those of the fit", run, saved["num_data"], saved["hash"][:12])
    return vc, data
