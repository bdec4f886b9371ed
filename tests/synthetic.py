"""Synthetic data the tests share."""

from __future__ import annotations

import numpy as np


def binary_blobs(n: int, num_pixels: int = 12, flip: float = 0.1, seed: int = 0,
                 clusters: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """n binary images (n, num_pixels) float32 around ``clusters`` random prototypes, each pixel
    flipped with probability ``flip``, and their cluster labels (n,) = arange(n) % clusters."""
    rng = np.random.default_rng(seed)
    protos = rng.random((clusters, num_pixels)) > 0.5
    y = np.arange(n) % clusters
    flips = rng.random((n, num_pixels)) < flip
    return np.where(flips, ~protos[y], protos[y]).astype(np.float32), y
