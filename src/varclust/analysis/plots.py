"""Matplotlib figures of a fit, written as PNG files."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

__all__ = ["plot_cluster_samples", "plot_training_curve"]


def _to_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 1:
        side = int(round(np.sqrt(img.size)))
        img = img.reshape(side, side) if side * side == img.size else img.reshape(1, -1)
    elif img.ndim == 3:
        img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
    return np.clip(img, 0.0, 1.0)


def plot_cluster_samples(
    samples: Sequence[torch.Tensor | np.ndarray], path: str | os.PathLike, title: str = ""
) -> None:
    """A grid: row k shows the images drawn from cluster k.

    Args:
        samples: K tensors, each (n, C, H, W), (n, H, W) or (n, P) with values in [0, 1].
    """
    rows = len(samples)
    cols = max(len(s) for s in samples)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8), squeeze=False)
    for k, row in enumerate(samples):
        for j in range(cols):
            ax = axes[k, j]
            ax.axis("off")
            if j < len(row):
                img = _to_hwc(row[j])
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        axes[k, 0].set_title(f"c={k}", fontsize=6, loc="left", pad=1)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_training_curve(
    history: Sequence[dict], path: str | os.PathLike, pretrain_losses: Sequence[float] = ()
) -> None:
    """The ELBO per datum over epochs, with ACC/NMI/ARI on a second axis when present."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
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
    fig.savefig(path, dpi=100)
    plt.close(fig)
