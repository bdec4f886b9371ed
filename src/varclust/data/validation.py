"""Turn user arrays into the image tensors the models take, with clear errors for bad input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "as_image_tensor",
    "check_fit_input",
    "check_labels",
    "check_num_clusters",
    "supervision_of",
]


def as_image_tensor(x: np.ndarray | Tensor, *, name: str = "X") -> Tensor:
    """Validate data and return a float32 tensor of shape (N, D), (N, 1, H, W) or (N, C, H, W).

    Accepted input: floating arrays of rank 2 (N, D), rank 3 (N, H, W; a channel axis is added)
    or rank 4 (N, C, H, W), with finite values. The range is checked by the likelihood.
    """
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise TypeError(f"{name} has dtype object; pass a numeric float array")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        hint = " (8-bit images: divide by 255)" if x.dtype == torch.uint8 else ""
        raise TypeError(f"{name} must hold floats in [0, 1], got dtype {x.dtype}{hint}")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() not in (2, 4):
        raise ValueError(
            f"{name} must have shape (N, D), (N, H, W) or (N, C, H, W), got {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: it holds no data points")
    if any(s == 0 for s in x.shape[1:]):
        raise ValueError(f"{name} has an empty feature axis: shape {tuple(x.shape)}")
    x = x.to(torch.float32)  # before the check: float64 beyond float32's range becomes inf
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        rows = int((~finite).flatten(1).any(1).sum())
        raise ValueError(
            f"{name} holds {bad} NaN or infinite values in {rows} data points; "
            "remove or impute them before fitting"
        )
    return x.contiguous()


def check_num_clusters(num_clusters: int, num_data: int | None = None) -> None:
    """K must be an integer >= 2 and, when the data size is known, at most N."""
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, (int, np.integer)):
        raise TypeError(f"num_clusters must be an integer, got {num_clusters!r}")
    if num_clusters < 2:
        raise ValueError(f"num_clusters must be at least 2 for clustering, got {num_clusters}")
    if num_data is not None and num_clusters > num_data:
        raise ValueError(
            f"num_clusters={num_clusters} exceeds the number of data points ({num_data}); "
            "use fewer clusters or more data"
        )


def check_labels(y: np.ndarray | None, num_data: int) -> np.ndarray | None:
    """Labels y of N data (for scores): an (N,) integer array, or None when not given."""
    if y is None:
        return None
    labels = np.asarray(y)
    if labels.shape != (num_data,):
        raise ValueError(f"y must have shape ({num_data},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"y must hold integer class labels, got dtype {labels.dtype}")
    return labels


def supervision_of(
    labels: np.ndarray | None, labelled: np.ndarray | None, num_clusters: int, num_data: int,
    device: torch.device,
) -> dict[str, Tensor]:
    """The semi-supervised arguments of the trainer: cluster (N,) long, cluster_mask (N,) bool;
    empty without ``labelled`` (an (N,) bool array marking the data whose label is given)."""
    if labelled is None:
        return {}
    mask = np.asarray(labelled)
    if mask.dtype != bool or mask.shape != (num_data,):
        raise ValueError(
            f"labelled must be a boolean array of shape ({num_data},) marking the labelled data, "
            f"got dtype {mask.dtype} and shape {mask.shape}"
        )
    if labels is None:
        raise ValueError("labelled=... needs the labels: pass y as well")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"semi-supervised labels must be integers, got dtype {labels.dtype}")
    given = labels[mask]
    if given.size and (given.min() < 0 or given.max() >= num_clusters):
        raise ValueError(
            f"labels of the labelled data must lie in [0, {num_clusters - 1}] (cluster k is "
            f"label k), got values in [{given.min()}, {given.max()}]"
        )
    cluster = torch.as_tensor(np.where(mask, labels, 0), dtype=torch.long, device=device)
    return {"cluster": cluster, "cluster_mask": torch.as_tensor(mask, device=device)}


def check_fit_input(
    X: Any, y: Any, labelled: Any, num_clusters: int, check_data: Callable[[Tensor], None],
    device: torch.device,
) -> tuple[Tensor, np.ndarray | None, dict[str, Tensor]]:
    """What a fit is given, checked: data X (N, ...) as a float tensor (on the CPU), the data
    themselves by ``check_data`` (the generator's support), labels y (N,) or None, and the
    semi-supervised arguments of ``labelled`` (:func:`supervision_of`, on ``device``)."""
    x = as_image_tensor(X if isinstance(X, Tensor) else np.asarray(X))
    check_num_clusters(num_clusters, len(x))
    check_data(x)
    labels = check_labels(y, len(x))
    return x, labels, supervision_of(labels, labelled, num_clusters, len(x), device)


def check_supervised_settings(revive_clusters: float, prior: Any) -> None:
    """ValueError for a labelled (semi-supervised) fit whose settings would break cluster k =
    label k: a prior that refits its clusters to the codes (the plain VAE's ``normal``: no label
    ties its refitted mixture to k), or the revival move (its splits ignore the labels)."""
    if prior.fits_clusters_to_codes:
        raise ValueError(
            "labelled data need a prior whose clusters are the model's: this prior refits a "
            "mixture to the codes after every epoch, which no label ties to cluster k; use "
            "prior='gmm' (or 'bayes-gmm', 'dp') for a labelled fit")
    if revive_clusters:
        raise ValueError(
            "revive_clusters moves clusters by splits that ignore the labels, which breaks "
            "cluster k = label k; set revive_clusters=0 (--revive-clusters 0) for a labelled fit")
