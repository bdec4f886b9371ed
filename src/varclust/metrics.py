"""Clustering metrics the deep-clustering literature reports: ACC (Hungarian), NMI, ARI."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, confusion_matrix, normalized_mutual_info_score

__all__ = ["cluster_accuracy", "hungarian_mapping", "clustering_scores"]


def _as_labels(y: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of labels, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    return arr


def hungarian_mapping(y_true: ArrayLike, y_pred: ArrayLike) -> dict[int, int]:
    """The one-to-one map cluster -> class that maximises agreement (scipy's Hungarian solver)."""
    y_true = _as_labels(y_true, "y_true")
    y_pred = _as_labels(y_pred, "y_pred")
    classes = np.unique(y_true)
    clusters = np.unique(y_pred)
    # rows: clusters, columns: classes
    counts = confusion_matrix(y_pred, y_true, labels=np.union1d(classes, clusters))
    labels = np.union1d(classes, clusters)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return {int(labels[r]): int(labels[c]) for r, c in zip(rows, cols)}


def cluster_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Unsupervised accuracy: the best one-to-one matching of clusters to classes.

    Args:
        y_true: (N,) integer class labels.
        y_pred: (N,) integer cluster labels (any K; unmatched clusters count as errors).
    """
    y_true = _as_labels(y_true, "y_true")
    y_pred = _as_labels(y_pred, "y_pred")
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("cannot score an empty labelling")
    mapping = hungarian_mapping(y_true, y_pred)
    mapped = np.array([mapping.get(int(c), -1) for c in y_pred])
    return float(np.mean(mapped == y_true))


def clustering_scores(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """ACC (Hungarian), NMI (arithmetic normalisation) and ARI as a dict."""
    y_true = _as_labels(y_true, "y_true")
    y_pred = _as_labels(y_pred, "y_pred")
    return {
        "acc": cluster_accuracy(y_true, y_pred),
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
    }
