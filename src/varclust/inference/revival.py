"""Reviving dead clusters by splitting the largest: a move on the mixture outside the ELBO.

A mixture VAE trained from scratch loses clusters early: once no datum's q(c | x) reaches a
component, no gradient brings one back (the cluster-information term's gradient through
q(c | x) ~ 0 is ~ 0), and the data of two classes then share one of the remaining components.
The split move of split-and-merge EM (Ueda, Nakano, Ghahramani & Hinton 2000, "SMEM algorithm
for mixture models") gives such a component the half of the largest cluster that a
two-component Gaussian mixture of that cluster's codes separates:

    dead k:   n_k < f N   (n_k the data whose cluster read-out is k, f = ``revive_clusters``)
    donor j:  argmax_j n_j
    (a_1, m_1), (a_2, m_2) = weights and means of GaussianMixture(2, diag)
                             of {E[z | x_n] : c_n = j}
    pi_j, mu_j <- pi_j a_1, m_1;   pi_k, mu_k, sigma_k <- pi_j a_2, m_2, sigma_j

and the weights renormalised (the dead component's old weight is shared out).

Both halves keep the donor's scale sigma_j, as SMEM's split keeps the covariance: early in a
fit from scratch the codes fill a small part of the prior's components, and halves as narrow
as the codes' spread there make the prior pull the codes into one point (measured: all 10
clusters collapsed into one within an epoch).

The guide's own cluster parameters split alike (:meth:`ClusterGuide.split_cluster`). The move
changes the parameters between epochs; the ELBO that follows is the model's as before, and the
move is recorded per epoch as ``revived_clusters``. It is deterministic given the seed, so a
resumed fit repeats it exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from torch import Tensor, nn

from ..model.gmm import point_mixture
from .prediction import encode_means, predict_clusters

__all__ = ["Split", "revive_dead_clusters"]

log = logging.getLogger("varclust")

@dataclass
class Split:
    """One split: the ``donor`` cluster's data go to ``donor`` and ``revived`` in the
    proportions ``fractions`` (2,), with means ``loc`` (2, D); the revived cluster takes
    the donor's scale."""

    donor: int
    revived: int
    fractions: Tensor
    loc: Tensor

    @property
    def clusters(self) -> list[int]:
        """[donor, revived]: the rows of the mixture the split writes."""
        return [self.donor, self.revived]


@torch.no_grad()
def revive_dead_clusters(model: nn.Module, guide: nn.Module, x: Tensor, min_fraction: float,
                         seed: int) -> list[Split]:
    """Split the largest cluster into each cluster that holds fewer than ``min_fraction`` of
    the data x (N, ...), in the prior and in the guide (the module docstring's move).

    Returns:
        The splits made, in order (empty when no cluster is dead).
    """
    labels = predict_clusters(model, guide, x).labels
    k = model.prior.num_clusters
    counts = np.bincount(labels, minlength=k)
    dead = [c for c in range(k) if counts[c] < min_fraction * len(labels)]
    if not dead:
        return []
    codes = encode_means(guide, x).double().cpu().numpy()
    mixture = point_mixture(
        model.prior, "revive_clusters (it splits Gaussian components)",
        "give the prior log_weights, loc and scale and a set_mixture that writes them, or set "
        "revive_clusters=0")
    weights = mixture.weights.double().cpu()
    loc = mixture.loc.double().cpu().clone()
    scale = mixture.scale.double().cpu().clone()
    splits = []
    for revived in dead:
        donor = int(counts.argmax())
        members = np.flatnonzero(labels == donor)
        if len(members) < 4:  # nothing left worth splitting
            break
        halves = GaussianMixture(2, covariance_type="diag", random_state=seed).fit(codes[members])
        split = Split(donor, revived, torch.as_tensor(halves.weights_),
                      torch.as_tensor(halves.means_))
        weights[split.clusters] = weights[donor] * split.fractions
        loc[split.clusters], scale[revived] = split.loc, scale[donor]
        second = members[halves.predict(codes[members]) == 1]
        labels[second] = revived
        counts = np.bincount(labels, minlength=k)
        splits.append(split)
    device = mixture.loc.device
    model.prior.set_mixture(weights.float().to(device), loc.float().to(device),
                            scale.float().to(device))
    for split in splits:
        guide.split_cluster(split)
        log.info("cluster %d held < %.2g of the data: revived with part of cluster %d "
                 "(%.0f %% of it)", split.revived, min_fraction, split.donor,
                 100 * float(split.fractions[1]))
    return splits
