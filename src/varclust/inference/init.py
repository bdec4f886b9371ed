"""Initialisation: autoencoder pretraining, then a Gaussian mixture fitted to the codes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from torch import Tensor, nn

from ..model.likelihoods import Likelihood
from .batching import epoch_batches

__all__ = [
    "fit_mixture_to_codes",
    "minimise_over_epochs",
    "pretrain_autoencoder",
    "pretrain_diffusion_autoencoder",
]


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
    event_dim = data.dim() - 1

    def batch_loss(x: Tensor) -> Tensor:
        return -likelihood(decoder(encoder(x)[0]), event_dim).log_prob(x).mean()

    params = [*encoder.parameters(), *decoder.parameters(), *likelihood.parameters()]
    return minimise_over_epochs(params, batch_loss, data, epochs, batch_size, learning_rate,
                                seed, on_epoch)


def pretrain_diffusion_autoencoder(
    encoder: nn.Module,
    generator: nn.Module,
    data: Tensor,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train encoder mean + diffusion generator as a diffusion autoencoder (ClusterDDPM's
    pretraining): the noise-prediction loss of x given z = loc(x), no prior term.

    Args:
        generator: has ``noise_loss(x, z) -> (B,)``.
        data: (N, C, H, W) on the training device.
    Returns:
        the mean noise loss per datum of every epoch.
    """
    encoder.train()
    generator.train()

    def batch_loss(x: Tensor) -> Tensor:
        return generator.noise_loss(x, encoder(x)[0]).mean()

    params = [*encoder.parameters(), *generator.parameters()]
    return minimise_over_epochs(params, batch_loss, data, epochs, batch_size, learning_rate,
                                seed, on_epoch)


def minimise_over_epochs(
    params: list[nn.Parameter],
    batch_loss: Callable[[Tensor], Tensor],
    data: Tensor,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Adam on ``batch_loss(x)`` (a mean per datum) over shuffled mini-batches of data (N, ...).

    Returns the mean loss per datum of every epoch.
    """
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    losses = []
    for epoch in range(epochs):
        total = torch.zeros((), device=data.device)
        for idx in epoch_batches(len(data), batch_size, seed + 7919, epoch, data.device):
            loss = batch_loss(data[idx])
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
