"""Initialisation: autoencoder pretraining, then a Gaussian mixture fitted to the codes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.mixture import GaussianMixture
from torch import Tensor, nn

from ..model.likelihoods import Likelihood
from .batching import epoch_batches

__all__ = ["align_to_labels", "fit_mixture_to_codes", "pretrain_autoencoder"]


def pretrain_autoencoder(
    encoder: nn.Module,
    decoder: nn.Module,
    likelihood: Likelihood,
    data: Tensor,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train encoder mean + decoder as a deterministic autoencoder on -log p(x | z = loc(x)).

    Args:
        data: (N, *data_shape) on the training device.
    Returns:
        the mean reconstruction loss per datum of every epoch.
    """
    params = [*encoder.parameters(), *decoder.parameters(), *likelihood.parameters()]
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    event_dim = data.dim() - 1
    losses = []
    for epoch in range(epochs):
        total = torch.zeros((), device=data.device)
        for idx in epoch_batches(len(data), batch_size, seed + 7919, epoch, data.device):
            x = data[idx]
            loc, _ = encoder(x)
            loss = -likelihood(decoder(loc), event_dim).log_prob(x).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        losses.append(float(total) / len(data))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    return losses


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
