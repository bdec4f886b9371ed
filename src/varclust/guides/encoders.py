"""Encoders x -> (loc, scale) of a diagonal Gaussian q(z | x)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from ..model.decoders import mlp

__all__ = ["ConvEncoder", "MLPEncoder", "make_encoder", "set_initial_scale"]


@torch.no_grad()
def set_initial_scale(encoder: nn.Module, scale: float) -> None:
    """Make q(z | x) start with the same small scale for every x, leaving the means as they are.

    Autoencoder pretraining trains only the means; the scale half of the head keeps its random
    start (about 0.3 to 0.7), far wider than the mixture fitted to the codes, and the first SVI
    steps then merge clusters that the initialisation had separated.
    """
    head: nn.Linear = encoder.head
    latent_dim = head.out_features // 2
    head.weight[latent_dim:].zero_()
    head.bias[latent_dim:].fill_(float(torch.tensor(max(scale, 2e-4) - 1e-4).expm1().log()))


class MLPEncoder(nn.Module):
    """x (B, *data_shape) -> loc, scale, each (B, D); default P-500-500-2000-D (VaDE/DEC)."""

    def __init__(
        self, data_shape: Sequence[int], latent_dim: int, hidden: Sequence[int] = (500, 500, 2000)
    ) -> None:
        super().__init__()
        in_dim = int(torch.tensor(tuple(data_shape)).prod())
        self.body = mlp([in_dim, *hidden], final_activation=True)
        self.head = nn.Linear(hidden[-1], 2 * latent_dim)
        self.data_dims = len(data_shape)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x.flatten(-self.data_dims))
        loc, raw_scale = self.head(h).chunk(2, dim=-1)
        return loc, softplus(raw_scale) + 1e-4


class ConvEncoder(nn.Module):
    """x (B, C, S, S) -> loc, scale, each (B, D): two stride-2 convolutions and a linear head."""

    def __init__(self, data_shape: Sequence[int], latent_dim: int, width: int = 32) -> None:
        super().__init__()
        if len(data_shape) != 3:
            raise ValueError(f"the conv encoder needs (C, H, W) images, not {tuple(data_shape)}")
        channels, h, w = data_shape
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * width * (h // 4) * (w // 4), 256), nn.ReLU(),
        )
        self.head = nn.Linear(256, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        loc, raw_scale = self.head(self.body(x)).chunk(2, dim=-1)
        return loc, softplus(raw_scale) + 1e-4


def make_encoder(
    network: str, data_shape: Sequence[int], latent_dim: int, hidden: Sequence[int]
) -> nn.Module:
    if network == "mlp":
        return MLPEncoder(data_shape, latent_dim, hidden)
    if network == "conv":
        return ConvEncoder(data_shape, latent_dim)
    raise ValueError(f"unknown network {network!r}; choose 'mlp' or 'conv'")
