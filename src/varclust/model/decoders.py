"""Decoders z -> raw likelihood parameters of a datum. They broadcast over any batch dims,
including the enumeration dims Pyro puts on the left, and compute in their ``compute_dtype``
(:mod:`varclust.model.precision`), returning float32."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .precision import MixedPrecisionNetwork

__all__ = ["ConvDecoder", "MLPDecoder", "make_decoder"]


def mlp(sizes: Sequence[int], final_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MLPDecoder(MixedPrecisionNetwork):
    """z (..., D) -> (..., *data_shape) through a ReLU MLP (default D-2000-500-500-P, VaDE/DEC)."""

    def __init__(
        self, latent_dim: int, data_shape: Sequence[int], hidden: Sequence[int] = (2000, 500, 500),
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(compute_dtype)
        self.data_shape = tuple(data_shape)
        self.net = mlp([latent_dim, *hidden, int(torch.tensor(self.data_shape).prod())])

    def forward(self, z: Tensor) -> Tensor:
        with self.autocast(z):
            out = self.net(z)
        return self.leave_autocast(out).reshape(*z.shape[:-1], *self.data_shape)


class ConvDecoder(MixedPrecisionNetwork):
    """z (..., D) -> (..., C, S, S) for S in {28, 32}: a linear layer to (4*width, S/4, S/4),
    then two stride-2 transposed convolutions and a 3x3 output convolution."""

    def __init__(self, latent_dim: int, data_shape: Sequence[int], width: int = 32,
                 compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__(compute_dtype)
        if len(data_shape) != 3 or data_shape[1] != data_shape[2] or data_shape[1] not in (28, 32):
            raise ValueError(
                f"the conv decoder makes 28x28 or 32x32 images, not shape {tuple(data_shape)}; "
                "use network='mlp' for other sizes"
            )
        self.data_shape = tuple(data_shape)
        channels, size = data_shape[0], data_shape[1]
        self.base = (4 * width, size // 4, size // 4)
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.ReLU(),
            nn.Linear(256, 4 * width * (size // 4) ** 2), nn.ReLU(),
        )
        self.net = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        batch = z.shape[:-1]
        with self.autocast(z):
            out = self.net(self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, *self.base))
        return self.leave_autocast(out).reshape(*batch, *self.data_shape)


def make_decoder(
    network: str, latent_dim: int, data_shape: Sequence[int], hidden: Sequence[int],
    compute_dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """The ``network`` decoder (its widths ``hidden`` reversed) computing in ``compute_dtype``."""
    if network == "mlp":
        return MLPDecoder(latent_dim, data_shape, tuple(reversed(tuple(hidden))), compute_dtype)
    if network == "conv":
        return ConvDecoder(latent_dim, data_shape, compute_dtype=compute_dtype)
    raise ValueError(f"unknown network {network!r}; choose 'mlp' or 'conv'")
