"""The consensus of several fits' cluster posteriors, and the term that teaches it to one fit.

A fit from scratch ends in a seed-dependent partition, and the weak ones are weak each in its
own way: on Fashion-MNIST one seed leaves sandals and ankle boots in one cluster, another
splits the bags over two (BENCHMARKS.md, issue 12). Where the fits disagree, the majority is
more often right than any one fit: the consensus of a clustering ensemble (Strehl & Ghosh
2002).

**The consensus** of R fits' cluster posteriors r_f (N, K), f = 1..R, whose cluster numbers
are arbitrary: each fit's columns are permuted to match a running consensus t, then t is their
mean,

    pi_f = argmax_pi  sum_k  sum_n t[n, k] r_f[n, pi(k)]      (the assignment problem,
                                                                scipy's linear_sum_assignment)
    t    = 1/R sum_f r_f[:, pi_f],

starting from t = r_1 and repeated (:func:`consensus_responsibilities`). Each row of t is a
distribution over the K clusters: the fits' average posterior once their clusters are matched.

**Teaching it to one fit** (:class:`ConsensusTargets`, ``consensus_targets``: w): the loss term

    w * N * mean_b KL(t_b || q(c | x_b))

on a mini-batch b of the data at ``indices``, with the targets t read from
``consensus_file`` ((N, K), rows of the fitted data in order). It is outside the ELBO, as the
terms of :mod:`.regularisers` are: a fit started from scratch with it learns the ensemble's
partition while its ELBO shapes the codes, the mixture and the decoder as in any fit.
:func:`varclust.restarts.fit_restarts` with ``consensus=w`` (``--restarts R --consensus W``)
fits R candidates, writes their consensus and fits it (module docstring there).

Measured (BENCHMARKS.md, issue 12; ``--recipe scratch --guide relaxed --restarts 5 --consensus
1``, five ensembles of seeds 0 to 24): UCI digits ACC 0.895 +- 0.035 against single fits'
0.837 +- 0.055 (paired +0.058 over each ensemble's candidates); Fashion-MNIST 0.611 +- 0.035
against 0.592 +- 0.053 (+0.019): where most fits share a mistake, so does their consensus.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from .checkpoint import write_atomic
from .objective_term import TermOutsideELBO

if TYPE_CHECKING:
    from ..config import FitConfig

__all__ = ["ConsensusTargets", "configured_targets", "consensus_responsibilities", "match_clusters",
           "read_consensus", "write_consensus"]


def match_clusters(reference: np.ndarray, responsibilities: np.ndarray) -> np.ndarray:
    """The columns of ``responsibilities`` (N, K) permuted to best match ``reference`` (N, K):
    column k of the result is the column of the input with the largest overlap
    sum_n reference[n, k] r[n, j] under a one-to-one matching (Hungarian algorithm)."""
    overlap = reference.T @ responsibilities  # (K, K): reference cluster x fit cluster
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    matched = np.empty_like(responsibilities)
    matched[:, rows] = responsibilities[:, cols]
    return matched


def consensus_responsibilities(responsibilities: Sequence[np.ndarray],
                               iterations: int = 3) -> np.ndarray:
    """The consensus t (N, K) of R fits' cluster posteriors, each (N, K) over the same data:
    every fit's clusters matched to t (:func:`match_clusters`), t their mean, ``iterations``
    times from t = the first fit's (module docstring). Rows sum to 1."""
    if len(responsibilities) < 2:
        raise ValueError(f"a consensus needs at least 2 fits, got {len(responsibilities)}")
    shapes = {np.shape(r) for r in responsibilities}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"the fits' cluster posteriors must all be (N, K) arrays of the same "
                         f"data and K, got shapes {sorted(shapes)}")
    fits = [np.asarray(r, dtype=np.float64) for r in responsibilities]
    consensus = fits[0]
    for _ in range(iterations):
        consensus = np.mean([match_clusters(consensus, r) for r in fits], axis=0)
    return consensus


def write_consensus(path: str | os.PathLike, consensus: np.ndarray) -> None:
    """``path`` (.npy), atomically: the consensus (N, K) as float32."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(consensus, dtype=np.float32))
    write_atomic(path, buffer.getvalue())


def read_consensus(path: str | os.PathLike, num_data: int, num_clusters: int) -> np.ndarray:
    """The targets (N, K) in ``path``, checked against the fit's data (N) and K and for rows
    that are distributions.

    Raises:
        ValueError: the file is missing or unreadable, or holds other shapes or values; the
            message names the file and the fix.
    """
    path = Path(path)
    try:
        targets = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the consensus targets {path} ({err}); give the .npy "
                         "that fit_restarts(consensus=...) wrote (consensus_file); a consensus "
                         "fit resumes from its restarts folder, wherever it was moved (varclust "
                         "fit --restarts R --consensus W --resume --out FOLDER)") from None
    if targets.shape != (num_data, num_clusters):
        raise ValueError(f"the consensus targets {path} are {targets.shape}, but the fit has "
                         f"{num_data} data and {num_clusters} clusters: give the targets of "
                         "these data, in their order, with K columns")
    if not (np.isfinite(targets).all() and (targets >= 0).all()
            and np.allclose(targets.sum(1), 1.0, atol=1e-3)):
        raise ValueError(f"the consensus targets {path} must hold one distribution over the "
                         "clusters a row (non-negative, summing to 1)")
    return targets


def configured_targets(config: FitConfig, num_data: int) -> np.ndarray | None:
    """The targets (N, K) that ``config``'s consensus term reads (:func:`read_consensus` of
    ``consensus_file``), None without the term: what a fit's data fingerprint records of them."""
    if not config.consensus_targets:
        return None
    return read_consensus(config.consensus_file, num_data, config.num_clusters)


class ConsensusTargets(TermOutsideELBO):
    """The loss term weight * N * mean_b KL(t_b || q(c | x_b)) (module docstring).

    Args:
        weight: w > 0.
        targets: (N, K) the consensus, one row a datum of the fitted data in order.
    """

    name = "consensus_targets"

    def __init__(self, weight: float, targets: np.ndarray | Tensor) -> None:
        if not weight > 0:
            raise ValueError(f"the consensus_targets weight must be positive, got {weight}")
        self.weight = weight
        targets = torch.as_tensor(targets, dtype=torch.float32)
        self.targets = targets / targets.sum(-1, keepdim=True)
        # t log t, 0 where t = 0: KL(t || q) = sum_k t_k log t_k - t_k log q_k
        self.neg_entropy = torch.special.xlogy(self.targets, self.targets).sum(-1)

    @classmethod
    def from_config(cls, config, data: Tensor | None) -> ConsensusTargets:
        if data is None:
            raise ValueError("consensus_targets reads one target a datum: build it with the "
                             "data (regularisers_of(config, data))")
        targets = read_consensus(config.consensus_file, len(data), config.num_clusters)
        return cls(config.consensus_targets, targets)

    def loss(self, guide: nn.Module, prior: nn.Module, x: Tensor, indices: Tensor,
             num_data: int, log_q: Tensor) -> Tensor:
        """weight * num_data * mean_b KL(t_b || q(c | x_b)) for the mini-batch x (B, ...), the
        data at ``indices`` (B,), whose log q(c | x) is ``log_q`` (B, K): a 0-dim tensor."""
        picked = indices.cpu()
        targets = self.targets[picked].to(log_q.device)
        neg_entropy = self.neg_entropy[picked].to(log_q.device)
        kl = neg_entropy - (targets * log_q).sum(-1)
        return self.weight * num_data * kl.mean()
