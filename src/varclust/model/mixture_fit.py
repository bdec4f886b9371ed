"""A diagonal Gaussian mixture fitted to codes (scikit-learn), and its components matched to
labels: how the clusters of a fit start, and the clusters of the standard-normal prior."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.mixture import GaussianMixture
from torch import Tensor

__all__ = ["align_to_labels", "fit_mixture_to_codes"]


def fit_mixture_to_codes(
    codes: Tensor, num_clusters: int, seed: int, n_init: int = 10
) -> tuple[Tensor, Tensor, Tensor]:
    """A diagonal GaussianMixture (scikit-learn) on codes (N, D).

    Returns weights (K,), means (K, D) and scales (K, D) as float32 tensors.
    """
    gmm = GaussianMixture(
        num_clusters, covariance_type="diag", n_init=n_init, random_state=seed, reg_covar=1e-4
    )
    gmm.fit(codes.detach().cpu().double().numpy())
    return (
        torch.from_numpy(gmm.weights_.astype(np.float32)),
        torch.from_numpy(gmm.means_.astype(np.float32)),
        torch.from_numpy(np.sqrt(gmm.covariances_).astype(np.float32)),
    )


def align_to_labels(
    weights: Tensor, loc: Tensor, scale: Tensor, codes: Tensor, cluster: Tensor,
    cluster_mask: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Reorder a mixture's components so that component k is the one the labelled codes of
    class k fall in (Hungarian matching on the summed log responsibilities, scipy).

    Args:
        weights (K,), loc (K, D), scale (K, D): the mixture; codes (N, D); cluster (N,) labels
        read where cluster_mask (N,) is true.
    Returns:
        weights, loc, scale reordered.
    """
    mask = cluster_mask.cpu()
    z, labels = codes.detach().cpu()[mask], cluster.cpu()[mask]
    log_joint = torch.distributions.Normal(loc, scale).log_prob(z[:, None]).sum(-1) + weights.log()
    log_resp = log_joint - log_joint.logsumexp(-1, keepdim=True)  # (L, K)
    k = len(weights)
    score = torch.zeros(k, k, dtype=log_resp.dtype).index_add_(0, labels, log_resp)
    _, order = linear_sum_assignment(score.numpy(), maximize=True)  # class -> component
    order = torch.as_tensor(order)
    return weights[order], loc[order], scale[order]
