"""The collapse guard: how many clusters the data actually use, and a warning when a fit has
collapsed into a few of them (the usual failure of mixture VAEs: every datum in one cluster,
ACC at chance, NMI 0)."""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_FRACTION", "cluster_usage", "collapse_warning"]

#: a cluster is in use when at least this fraction of the data is assigned to it
MIN_FRACTION = 0.01


def cluster_usage(assigned: np.ndarray, num_clusters: int) -> dict[str, float]:
    """The per-epoch record of how the data spread over the clusters.

    Args:
        assigned: (N,) the cluster of each datum, in [0, K).
    Returns:
        ``clusters_used``: clusters holding >= 1 % of the data; ``largest_cluster``: the
        fraction of the data in the largest cluster.
    """
    counts = np.bincount(np.asarray(assigned), minlength=num_clusters)
    fractions = counts / max(1, counts.sum())
    return {"clusters_used": int((fractions >= MIN_FRACTION).sum()),
            "largest_cluster": float(fractions.max())}


def collapse_warning(
    usage: dict[str, float], num_clusters: int, prior_prunes: bool = False
) -> str | None:
    """A sentence saying how the clustering collapsed (fewer than K/2 clusters in use, or one
    cluster holding over half the data), or None when it did not. A prior that switches clusters
    off by design (``prior_prunes``: the Dirichlet process, whose K is a truncation) is only
    held to the second test."""
    problems = []
    if not prior_prunes and usage["clusters_used"] < num_clusters / 2:
        problems.append(f"only {usage['clusters_used']} of the K={num_clusters} clusters have "
                        f"{MIN_FRACTION:.0%} of the data or more")
    if usage["largest_cluster"] > 0.5:
        problems.append(f"one cluster holds {usage['largest_cluster']:.0%} of the data")
    if not problems:
        return None
    return ("the clustering has collapsed: " + " and ".join(problems) + "; pretrain longer "
            "(pretrain_epochs), train longer (epochs), or lower K")
