"""Per-cluster heads on a code: q(c | x) and one Gaussian q(z | x, c) per cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .base import ClusterGuide
from .encoders import set_initial_scale

if TYPE_CHECKING:  # the type only: inference imports the guides
    from ..inference.revival import Split

__all__ = ["ClusterHeads", "PerClusterGuide", "prior_uses_fitted_mixture"]


def prior_uses_fitted_mixture(prior: nn.Module) -> bool:
    """True for priors whose clusters are a mixture fitted to the codes after the fact (the
    standard-normal prior): the guide's own cluster heads then carry no cluster information."""
    return prior.fits_clusters_to_codes


class ClusterHeads(nn.Module):
    """(loc, scale) of a code (B, D) -> logits (B, K), locs (B, K, D), scales (B, K, D).

    The logits are a Gaussian discriminant on the code, log w_k + log N(loc | m_k, s_k), with
    the guide's own m, s, w (initialised from the prior's mixture after pretraining by
    :meth:`init_from_mixture`, then free). Per-cluster locs and scales are the code's plus a
    learned linear offset, zero at the start.
    """

    def __init__(self, num_clusters: int, latent_dim: int) -> None:
        super().__init__()
        self.num_clusters, self.latent_dim = num_clusters, latent_dim
        self.centre = nn.Parameter(torch.randn(num_clusters, latent_dim))
        self.log_spread = nn.Parameter(torch.zeros(num_clusters, latent_dim))
        self.log_weight = nn.Parameter(torch.zeros(num_clusters))
        self.offset = nn.Linear(latent_dim, 2 * num_clusters * latent_dim)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def forward(self, loc: Tensor, scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        diff = (loc.unsqueeze(-2) - self.centre) * torch.exp(-self.log_spread)
        logits = (-0.5 * diff**2 - self.log_spread).sum(-1) + self.log_weight.log_softmax(-1)
        shift, log_stretch = self.offset(loc).unflatten(
            -1, (2, self.num_clusters, self.latent_dim)
        ).unbind(-3)
        return logits, loc.unsqueeze(-2) + shift, scale.unsqueeze(-2) * log_stretch.exp()

    @torch.no_grad()
    def init_from_mixture(self, weights: Tensor, loc: Tensor, scale: Tensor) -> None:
        """Set the discriminant to a mixture: weights (K,), loc (K, D), scale (K, D)."""
        self.centre.copy_(torch.as_tensor(loc))
        self.log_spread.copy_(torch.as_tensor(scale).clamp_min(1e-3).log())
        self.log_weight.copy_(torch.as_tensor(weights).clamp_min(1e-6).log())

    @torch.no_grad()
    def split(self, donor: int, revived: int, fractions: Tensor, loc: Tensor) -> None:
        """Split the discriminant's component ``donor`` into ``donor`` and ``revived`` with
        weights in the proportions ``fractions`` (2,) and means ``loc`` (2, D); the revived
        component's spread and offset start as the donor's."""
        rows = [donor, revived]
        self.centre[rows] = torch.as_tensor(loc).to(self.centre)
        self.log_spread[revived] = self.log_spread[donor]
        self.log_weight[rows] = (self.log_weight[donor]
                                 + torch.as_tensor(fractions).to(self.centre).clamp_min(1e-6).log())
        per_cluster = self.offset.weight.view(2, self.num_clusters, self.latent_dim, -1)
        per_cluster[:, revived] = per_cluster[:, donor]
        bias = self.offset.bias.view(2, self.num_clusters, self.latent_dim)
        bias[:, revived] = bias[:, donor]


class PerClusterGuide(ClusterGuide):
    """A guide with an encoder and :class:`ClusterHeads` (the mixture and relaxed guides).

    Args:
        encoder: x (B, ...) -> (loc, scale), each (B, D).
        num_clusters: K; latent_dim: D.
    """

    def __init__(self, encoder: nn.Module, num_clusters: int, latent_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = ClusterHeads(num_clusters, latent_dim)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """sum_k softmax(logits)_k loc_k(x) and the encoder's scale: each (B, D)."""
        loc, scale = self.encoder(x)
        logits, locs, _ = self.heads(loc, scale)
        return (logits.softmax(-1).unsqueeze(-1) * locs).sum(-2), scale

    def init_from_mixture(self, weights: Tensor, loc: Tensor, scale: Tensor) -> None:
        """Start the cluster heads at the mixture fitted to the pretrained codes."""
        self.heads.init_from_mixture(weights, loc, scale)

    def split_cluster(self, split: Split) -> None:
        """Split the heads' discriminant as the prior's mixture was split."""
        self.heads.split(split.donor, split.revived, split.fractions, split.loc)

    def set_initial_code_scale(self, scale: float) -> None:
        set_initial_scale(self.encoder, scale)
