"""Encoders x -> (loc, scale) of a diagonal Gaussian q(z | x), computing in their
``compute_dtype`` (:mod:`varclust.model.precision`) and returning float32."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from ..model.decoders import mlp
from ..model.precision import MixedPrecisionNetwork

__all__ = ["ConvEncoder", "GaussianEncoder", "MLPEncoder", "make_encoder", "set_initial_scale"]


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


class GaussianEncoder(MixedPrecisionNetwork):
    """x -> loc, scale of q(z | x), each (B, D) float32: the subclass's :meth:`features`
    (B, F) under autocast, then its linear ``head`` (F -> 2D) and the softplus of the scale
    half in float32 (the codes keep float32 resolution; the head is a small part of the
    work)."""

    head: nn.Linear

    def features(self, x: Tensor) -> Tensor:
        """The body's features (B, F) of x (B, *data_shape)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with self.autocast(x):
            h = self.features(x)
        loc, raw_scale = self.head(self.leave_autocast(h)).chunk(2, dim=-1)
        return loc, softplus(raw_scale) + 1e-4


class MLPEncoder(GaussianEncoder):
    """x (B, *data_shape) -> loc, scale, each (B, D); default P-500-500-2000-D (VaDE/DEC)."""

    def __init__(
        self, data_shape: Sequence[int], latent_dim: int, hidden: Sequence[int] = (500, 500, 2000),
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(compute_dtype)
        in_dim = int(torch.tensor(tuple(data_shape)).prod())
        self.body = mlp([in_dim, *hidden], final_activation=True)
        self.head = nn.Linear(hidden[-1], 2 * latent_dim)
        self.data_dims = len(data_shape)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x.flatten(-self.data_dims))


class ConvEncoder(GaussianEncoder):
    """x (B, C, S, S) -> loc, scale, each (B, D): two stride-2 convolutions and a linear head."""

    def __init__(self, data_shape: Sequence[int], latent_dim: int, width: int = 32,
                 compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__(compute_dtype)
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

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)


def make_encoder(
    network: str, data_shape: Sequence[int], latent_dim: int, hidden: Sequence[int],
    compute_dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """The ``network`` encoder (widths ``hidden`` for the MLP) computing in ``compute_dtype``."""
    if network == "mlp":
        return MLPEncoder(data_shape, latent_dim, hidden, compute_dtype)
    if network == "conv":
        return ConvEncoder(data_shape, latent_dim, compute_dtype=compute_dtype)
    raise ValueError(f"unknown network {network!r}; choose 'mlp' or 'conv'")
