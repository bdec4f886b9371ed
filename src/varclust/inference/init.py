"""Initialisation: autoencoder pretraining, then a Gaussian mixture fitted to the codes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from torch import Tensor, nn

from ..model.likelihoods import Likelihood
from .batching import epoch_batches

__all__ = ["fit_mixture_to_codes", "labelled_means", "pretrain_autoencoder"]


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
    codes: Tensor, num_clusters: int, seed: int, n_init: int = 10,
    means_init: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """A diagonal GaussianMixture (scikit-learn) on codes (N, D).

    ``means_init`` (K, D): start EM there (one initialisation) instead of k-means.
    Returns weights (K,), means (K, D) and scales (K, D) as float32 tensors.
    """
    extra = {} if means_init is None else {
        "means_init": means_init.detach().cpu().double().numpy(), "n_init": 1}
    gmm = GaussianMixture(
        num_clusters, **{"covariance_type": "diag", "n_init": n_init, "random_state": seed,
                         "reg_covar": 1e-4, **extra}
    )
    gmm.fit(codes.detach().cpu().double().numpy())
    return (
        torch.from_numpy(gmm.weights_.astype(np.float32)),
        torch.from_numpy(gmm.means_.astype(np.float32)),
        torch.from_numpy(np.sqrt(gmm.covariances_).astype(np.float32)),
    )


def labelled_means(
    codes: Tensor, cluster: Tensor, cluster_mask: Tensor, num_clusters: int, seed: int
) -> Tensor:
    """Starting means (K, D) for a semi-supervised mixture: the mean code of each cluster's
    labelled data; a cluster without labels starts at a random unlabelled code (seeded).

    Args:
        codes: (N, D); cluster: (N,) labels, read where cluster_mask (N,) is true.
    """
    codes, cluster, mask = codes.detach().cpu(), cluster.cpu(), cluster_mask.cpu()
    generator = torch.Generator().manual_seed(seed)
    spare = codes[~mask] if (~mask).any() else codes
    means = spare[torch.randint(len(spare), (num_clusters,), generator=generator)].clone()
    for k in range(num_clusters):
        members = mask & (cluster == k)
        if members.any():
            means[k] = codes[members].mean(0)
    return means
