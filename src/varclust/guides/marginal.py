"""The marginal guide: q(z | x) only; the cluster is summed out exactly in the model (VaDE)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
from torch import Tensor, nn

from .base import ClusterGuide
from .encoders import set_initial_scale

__all__ = ["MarginalGuide"]


class MarginalGuide(ClusterGuide):
    """q(z | x) = Normal(loc(x), scale(x)); the cluster posterior is p(c | z) under the prior.

    In semi-supervised batches nothing changes here: the model conditions its ``cluster`` on
    the labels and enumerates the rest.

    Args:
        encoder: x (B, *data_shape) -> (loc, scale), each (B, D).
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def set_initial_code_scale(self, scale: float) -> None:
        set_initial_scale(self.encoder, scale)

    def local(self, x: Tensor, cluster: Tensor | None, cluster_mask: Tensor | None) -> None:
        loc, scale = self.encoder(x)
        pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """loc and scale of q(z | x), each (B, D)."""
        return self.encoder(x)
