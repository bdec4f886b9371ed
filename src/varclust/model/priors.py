"""Priors over the latent code: the learned Gaussian mixture p(c) p(z | c)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from pyro.ops.indexing import Vindex
from torch import Tensor
from torch.distributions import transform_to

from ..data.validation import check_num_clusters

__all__ = ["GaussianMixturePrior", "assign_param"]


class GaussianMixturePrior(PyroModule):
    """c ~ Categorical(weights), z | c ~ Normal(loc[c], scale[c]) with diagonal scales.

    Parameters (point estimates, learned with the networks):
        weights: (K,) on the simplex.
        loc: (K, D) component means.
        scale: (K, D) component scales, bounded below by ``min_scale``.

    Called inside the model's ``data`` plate it emits the sites ``cluster`` (enumerated in
    parallel, so ``TraceEnum_ELBO`` sums it out exactly) and ``z``, and returns z.
    """

    def __init__(self, num_clusters: int, latent_dim: int, min_scale: float = 1e-3) -> None:
        check_num_clusters(num_clusters)
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be at least 1, got {latent_dim}")
        super().__init__()
        self.num_clusters = num_clusters
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        self.weights = PyroParam(
            torch.full((num_clusters,), 1.0 / num_clusters), constraints.simplex
        )
        self.loc = PyroParam(torch.randn(num_clusters, latent_dim))
        self.scale = PyroParam(
            torch.ones(num_clusters, latent_dim), constraints.greater_than(min_scale)
        )

    def forward(self) -> Tensor:
        c = pyro.sample(
            "cluster", dist.Categorical(self.weights), infer={"enumerate": "parallel"}
        )
        loc = Vindex(self.loc)[..., c, :]
        scale = Vindex(self.scale)[..., c, :]
        return pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def log_joint(self, z: Tensor) -> Tensor:
        """log p(c = k, z) for every k: z (..., D) -> (..., K)."""
        comp = dist.Normal(self.loc, self.scale).to_event(1)
        return comp.log_prob(z.unsqueeze(-2)) + self.weights.clamp_min(1e-30).log()

    def sample_component(self, k: int, num_samples: int) -> Tensor:
        """Draw z from component k: returns (num_samples, D)."""
        if not 0 <= k < self.num_clusters:
            raise ValueError(f"cluster must be in [0, {self.num_clusters - 1}], got {k}")
        return dist.Normal(self.loc[k], self.scale[k]).sample((num_samples,))

    @torch.no_grad()
    def set_mixture(self, weights: Tensor, loc: Tensor, scale: Tensor) -> None:
        """Overwrite the mixture in place (optimisers keep tracking the same parameters).

        Args:
            weights: (K,) non-negative, renormalised and floored at 1e-6.
            loc: (K, D).
            scale: (K, D) positive, floored just above ``min_scale``.
        """
        weights = torch.as_tensor(weights).clamp_min(1e-6)
        assign_param(self, "weights", weights / weights.sum())
        assign_param(self, "loc", torch.as_tensor(loc))
        assign_param(self, "scale", torch.as_tensor(scale).clamp_min(2 * self.min_scale))


@torch.no_grad()
def assign_param(module: PyroModule, name: str, value: Tensor) -> None:
    """Write a constrained value into a PyroParam's unconstrained tensor, in place."""
    constraint, _ = module._pyro_params[name]
    unconstrained = getattr(module, name + "_unconstrained")
    value = value.to(dtype=unconstrained.dtype, device=unconstrained.device)
    if value.shape != unconstrained.shape:
        raise ValueError(
            f"{name} must have shape {tuple(unconstrained.shape)}, got {tuple(value.shape)}"
        )
    unconstrained.copy_(transform_to(constraint).inv(value))
