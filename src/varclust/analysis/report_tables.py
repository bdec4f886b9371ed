"""The tables and the real members of each cluster shown by ``varclust report``."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..inference.collapse import cluster_usage
from ..metrics import clustering_scores

__all__ = ["cluster_members", "cluster_rows", "comparison_rows", "heldout_rows", "html_table"]


def cluster_members(images: Tensor, labels: np.ndarray, responsibilities: np.ndarray,
                    per_cluster: int = 8) -> list[Tensor]:
    """For each of the K clusters, up to ``per_cluster`` of its data (images (N, ...)), those
    it claims most surely first (highest responsibility among the data assigned to it).

    Args:
        labels: (N,) assigned clusters; responsibilities: (N, K).
    Returns:
        K tensors (m_k, ...), m_k <= per_cluster (0 for an empty cluster).
    """
    rows = []
    for k in range(responsibilities.shape[1]):
        mine = np.flatnonzero(labels == k)
        best = mine[np.argsort(-responsibilities[mine, k], kind="stable")[:per_cluster]]
        rows.append(images[torch.as_tensor(best, dtype=torch.long)])
    return rows


def cluster_rows(labels: np.ndarray, weights: np.ndarray) -> list[list[str]]:
    """One row per cluster: its index, data assigned (count and share), the prior's weight."""
    counts = np.bincount(labels, minlength=len(weights))
    total = max(1, counts.sum())
    return [[str(k), str(int(n)), f"{n / total:.1%}", f"{w:.3f}"]
            for k, (n, w) in enumerate(zip(counts, weights))]


def _run_scores(assigned: np.ndarray, k: int, labels: np.ndarray | None) -> list[str]:
    """ACC and NMI (given labels, else "-") and the clusters in use of a run's assigned
    clusters (N,) among its K."""
    scores = clustering_scores(labels, assigned) if labels is not None else {}
    used = cluster_usage(assigned, k)["clusters_used"]
    return [*(f"{scores[s]:.4f}" if s in scores else "-" for s in ("acc", "nmi")),
            f"{used} / {k}"]


def comparison_rows(comparison, runs: dict[str, tuple[np.ndarray, int]],
                    labels: np.ndarray | None) -> list[list[str]]:
    """One row per run of an ``az.compare`` table (its rank order): rank, ELPD (LOO) and its
    standard error, then ACC and NMI (given labels (N,)) and the clusters in use, from each
    run's assigned clusters (N,) and K in ``runs``."""
    return [[str(name), str(int(entry["rank"])), f"{entry['elpd_loo']:.1f}",
             f"{entry['se']:.1f}", *_run_scores(*runs[name], labels)]
            for name, entry in comparison.iterrows()]


def heldout_rows(table, runs: dict[str, tuple[np.ndarray, int]],
                 labels: np.ndarray | None) -> list[list[str]]:
    """One row per run of a :func:`~varclust.analysis.heldout.heldout_table` (its rank order):
    rank, the importance-weighted log-likelihood per datum (``mean``) and its ``se``, ``diff``
    to the best and its paired ``diff_se`` (nats per datum), then ACC, NMI and the clusters in
    use as in :func:`comparison_rows`."""
    return [[str(name), str(int(entry["rank"])), f"{entry['mean']:.2f}", f"{entry['se']:.2f}",
             f"{entry['diff']:.2f}", f"{entry['diff_se']:.2f}", *_run_scores(*runs[name], labels)]
            for name, entry in table.iterrows()]


def html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table (cells escaped)."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table class=\"grid\"><tr>{head}</tr>{body}</table>"
