"""Matplotlib figures of a fit.

Each function draws one figure and returns it (a ``matplotlib.figure.Figure``); given a
``path`` it also writes it there as PNG. The figures are made without ``pyplot``, so none is
left open: in a notebook the returned figure shows inline once, as the cell's value.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import singledispatch

import numpy as np
import torch
from matplotlib.figure import Figure

from ..estimator import VarClust

__all__ = [
    "plot_cluster_samples",
    "plot_compare",
    "plot_confusion_matrix",
    "plot_entropy_histogram",
    "plot_heldout",
    "plot_latent_map",
    "plot_training_curve",
]


def _to_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 1:
        side = int(round(np.sqrt(img.size)))
        img = img.reshape(side, side) if side * side == img.size else img.reshape(1, -1)
    elif img.ndim == 3:
        img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
    return np.clip(img, 0.0, 1.0)


def _finish(fig: Figure, path: str | os.PathLike | None, **savefig: object) -> Figure:
    """Write the figure to ``path`` as PNG when given; return it."""
    if path is not None:
        fig.savefig(path, dpi=100, **savefig)
    return fig


def plot_cluster_samples(
    samples: Sequence[torch.Tensor | np.ndarray], path: str | os.PathLike | None = None,
    title: str = "", row_labels: Sequence[int] | None = None,
    members: Sequence[torch.Tensor | np.ndarray] | None = None,
) -> Figure:
    """A grid: row i shows the images of cluster ``row_labels[i]`` (default i), and, given
    ``members``, real members of that cluster beside them, after a blank column.

    Args:
        samples: one tensor per row, each (n, C, H, W), (n, H, W) or (n, P), values in [0, 1]
            (drawn from the cluster, or real members of it).
        members: one tensor per row of the same kind (m images each), or None.
    """
    rows = len(samples)
    left = max(1, max(len(s) for s in samples))
    right = max((len(m) for m in members), default=0) if members is not None else 0
    cols = left + (1 + right if right else 0)
    row_labels = list(range(rows)) if row_labels is None else list(row_labels)
    fig = Figure(figsize=(cols * 0.8, rows * 0.8))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, row in enumerate(samples):
        images = [*row, *([None] * (left - len(row)))]
        if right:
            images += [None, *members[k]]
        for j, image in enumerate(images):
            if image is not None:
                img = _to_hwc(image)
                axes[k, j].imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        axes[k, 0].set_title(f"c={row_labels[k]}", fontsize=6, loc="left", pad=1)
    if right:
        axes[0, left + 1].set_title("real members:", fontsize=6, loc="left", pad=1)
    if title:
        fig.suptitle(title, fontsize=8)
    return _finish(fig, path, bbox_inches="tight")


def plot_training_curve(
    history: Sequence[dict], path: str | os.PathLike | None = None,
    pretrain_losses: Sequence[float] = (),
) -> Figure:
    """The ELBO per datum over epochs, with ACC/NMI/ARI on a second axis when present."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["elbo"] for h in history], color="C0", label="ELBO / datum")
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO per datum")
    if history and "acc" in history[0]:
        ax2 = ax.twinx()
        for i, key in enumerate(("acc", "nmi", "ari")):
            ax2.plot(epochs, [h[key] for h in history], color=f"C{i + 1}", label=key.upper())
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("score")
        ax2.legend(loc="lower right", fontsize=7)
    ax.legend(loc="upper left", fontsize=7)
    title = "SVI training"
    if pretrain_losses:
        title += f" (after {len(pretrain_losses)} pretraining epochs, final AE loss "
        title += f"{pretrain_losses[-1]:.2f})"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)


def _project_2d(codes: np.ndarray, method: str, seed: int) -> np.ndarray:
    """codes (N, D) -> (N, 2) by PCA or t-SNE (scikit-learn); D <= 2 is kept (padded)."""
    if method not in ("pca", "tsne"):
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    if codes.shape[1] <= 2:
        return np.pad(codes, ((0, 0), (0, 2 - codes.shape[1])))
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(codes)
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(codes) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed
                ).fit_transform(codes)


@singledispatch
def _codes_and_clusters(codes, clusters) -> tuple[np.ndarray, np.ndarray]:
    """codes (N, D) and clusters (N,) given as arrays."""
    return np.asarray(codes, dtype=np.float64), np.asarray(clusters)


@_codes_and_clusters.register
def _(vc: VarClust, x) -> tuple[np.ndarray, np.ndarray]:
    """A fitted model and data x (N, ...): its codes and clusters of x."""
    return vc.encode(x).astype(np.float64), vc.predict(x).labels


def plot_latent_map(
    codes: np.ndarray | VarClust,
    clusters: np.ndarray,
    path: str | os.PathLike | None = None,
    labels: np.ndarray | None = None,
    method: str = "pca",
    seed: int = 0,
) -> Figure:
    """The codes projected to 2-D (PCA or t-SNE), coloured by cluster and, beside, by label.

    ``plot_latent_map(vc, x)`` draws a fitted model's codes and clusters of data x (N, ...).

    Args:
        codes: (N, D) posterior means of z, or a fitted VarClust.
        clusters: (N,) assigned clusters, or the data when ``codes`` is a VarClust.
        labels: (N,) true classes, optional (adds a second panel).
    """
    codes, clusters = _codes_and_clusters(codes, clusters)
    if codes.ndim != 2 or clusters.shape != (len(codes),):
        raise ValueError(
            f"codes must be (N, D) and clusters (N,), got {codes.shape} and {clusters.shape}"
        )
    xy = _project_2d(codes, method, seed)
    panels = [("cluster", clusters)] + ([("label", np.asarray(labels))] if labels is not None
                                        else [])
    fig = Figure(figsize=(4.5 * len(panels), 4))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, colour) in zip(axes[0], panels):
        points = ax.scatter(xy[:, 0], xy[:, 1], c=colour, cmap="tab10" if colour.max() < 10
                            else "tab20", s=4, alpha=0.7, linewidths=0)
        ax.set_title(f"codes ({method.upper()}) coloured by {name}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(*points.legend_elements(num=None), fontsize=6, markerscale=0.7,
                  loc="best", title=name, title_fontsize=7)
    fig.tight_layout()
    return _finish(fig, path)


def plot_confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, path: str | os.PathLike | None = None
) -> Figure:
    """Counts of class (rows) against cluster (columns), clusters put in the order of the
    classes they are matched to by the Hungarian assignment (the matching behind ACC)."""
    from sklearn.metrics import confusion_matrix

    from ..metrics import cluster_accuracy, hungarian_mapping

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    mapping = hungarian_mapping(y_true, y_pred)
    clusters = np.unique(y_pred)
    order = sorted(clusters, key=lambda c: (mapping.get(int(c), np.inf), c))
    classes = np.unique(y_true)
    counts = confusion_matrix(y_true, y_pred, labels=np.union1d(classes, clusters))
    index = {v: i for i, v in enumerate(np.union1d(classes, clusters))}
    counts = counts[np.ix_([index[c] for c in classes], [index[c] for c in order])]
    fig = Figure(figsize=(0.45 * len(order) + 2.5, 0.45 * len(classes) + 1.8))
    ax = fig.subplots()
    ax.imshow(counts, cmap="Blues")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=6,
                    color="white" if counts[i, j] > counts.max() / 2 else "black")
    ax.set_xticks(range(len(order)), [f"{c}->{mapping.get(int(c), '-')}" for c in order],
                  rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), [str(c) for c in classes], fontsize=7)
    ax.set_xlabel("cluster -> matched class")
    ax.set_ylabel("class")
    ax.set_title(f"confusion after Hungarian matching (ACC {cluster_accuracy(y_true, y_pred):.3f})",
                 fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)


def plot_entropy_histogram(
    entropy: np.ndarray, num_clusters: int, path: str | os.PathLike | None = None
) -> Figure:
    """Histogram of the assignments' entropy in nats, from 0 (certain) to log K (undecided)."""
    entropy = np.asarray(entropy, dtype=np.float64).ravel()
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.hist(entropy, bins=40, range=(0.0, np.log(num_clusters)), color="C0")
    ax.axvline(np.log(num_clusters), color="C3", linestyle="--", label=f"log K = "
               f"{np.log(num_clusters):.2f}")
    ax.set_xlabel("entropy of the cluster posterior (nats)")
    ax.set_ylabel("data points")
    ax.set_title(f"assignment uncertainty (mean {entropy.mean():.3f} nats, "
                 f"{np.mean(entropy > 0.5):.1%} above 0.5)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _finish(fig, path)


def plot_compare(comparison, path: str | os.PathLike | None = None, title: str = "") -> Figure:
    """ArviZ's ``az.plot_compare`` of an ``az.compare`` table (several fits)."""
    import arviz as az

    fig = Figure(figsize=(6, 1.2 + 0.5 * len(comparison)))
    ax = fig.subplots()
    az.plot_compare(comparison, insample_dev=False, plot_ic_diff=True, ax=ax)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)


def plot_heldout(table, path: str | os.PathLike | None = None, title: str = "") -> Figure:
    """A :func:`~varclust.analysis.heldout_log_likelihood` table (several fits, best on top).

    Left: each fit's held-out log-likelihood per datum, ``mean`` +- ``se``. Right: its
    difference to the best, ``diff`` +- ``diff_se`` (paired), 0 for the best: a fit whose bar
    stays clear of 0 is worse on these data by more than the held-out sample explains.
    """
    names = list(table.index)
    rows = np.arange(len(names))[::-1]  # best on top
    fig = Figure(figsize=(8, 1.2 + 0.4 * len(names)))
    left, right = fig.subplots(1, 2, sharey=True)
    left.errorbar(table["mean"], rows, xerr=table["se"], fmt="o", color="C0", capsize=3)
    left.set_xlabel("log-likelihood per datum\n(nats)")
    left.set_yticks(rows, names)
    right.errorbar(-table["diff"], rows, xerr=table["diff_se"], fmt="^", color="C1", capsize=3)
    right.axvline(0, color="grey", lw=0.8, ls="--")
    right.set_xlabel("difference to the best\n(nats per datum)")
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)
