"""What autoencoder pretraining minimises: the reconstruction loss of a decoder with its
likelihood, or the noise loss of a diffusion generator (a diffusion autoencoder)."""

from __future__ import annotations

from torch import Tensor, nn

from .likelihoods import Likelihood

__all__ = ["AutoencoderLoss", "DiffusionAutoencoderLoss"]


class AutoencoderLoss(nn.Module):
    """x (B, *data_shape) -> the mean over the batch of -log p(x | z = loc(x)) (a scalar)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Likelihood) -> None:
        super().__init__()
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood

    def forward(self, x: Tensor) -> Tensor:
        loc, _ = self.encoder(x)
        return -self.likelihood(self.decoder(loc), x.dim() - 1).log_prob(x).mean()


class DiffusionAutoencoderLoss(nn.Module):
    """x (B, C, H, W) -> the mean noise-prediction loss of x given z = loc(x) (ClusterDDPM's
    pretraining: a diffusion autoencoder, no prior term). ``generator.noise_loss(x, z) -> (B,)``."""

    def __init__(self, encoder: nn.Module, generator: nn.Module) -> None:
        super().__init__()
        self.encoder, self.generator = encoder, generator

    def forward(self, x: Tensor) -> Tensor:
        return self.generator.noise_loss(x, self.encoder(x)[0]).mean()
