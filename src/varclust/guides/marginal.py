"""The marginal guide: q(z | x) only; the cluster is summed out exactly in the model (VaDE)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
from pyro.nn import PyroModule
from torch import Tensor, nn

from ..model.generative import data_plate

__all__ = ["MarginalGuide"]


class MarginalGuide(PyroModule):
    """q(z | x) = Normal(loc(x), scale(x)); the cluster posterior is p(c | z) under the prior.

    Args:
        encoder: x (B, *data_shape) -> (loc, scale), each (B, D).
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor, indices: Tensor | None = None, num_data: int | None = None):
        """Same signature as the model: x (B, ...), indices (B,), num_data N."""
        loc, scale = self.encoder(x)
        with data_plate(x, indices, num_data):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """loc and scale of q(z | x), each (B, D)."""
        return self.encoder(x)

    def cluster_logits(self, x: Tensor, prior: PyroModule) -> Tensor:
        """log p(c | z = E_q[z]) for each datum: (B, K), normalised over K (VaDE's rule)."""
        loc, _ = self.encoder(x)
        log_joint = prior.log_joint(loc)
        return log_joint - log_joint.logsumexp(-1, keepdim=True)
