"""A Bayesian Gaussian mixture: priors on the weights, means and scales, with a global guide.

    weights ~ Dirichlet(concentration * 1_K)          (concentration < 1: sparse)
    loc     ~ Normal(0, loc_prior_scale)               (K, D)
    scale   ~ LogNormal(0, scale_prior_scale)          (K, D)
    c_n ~ Categorical(weights),  z_n | c_n ~ Normal(loc[c_n], scale[c_n])

The three global sites are sampled by the model outside the ``data`` plate, so the mini-batch
scaling N / B leaves their prior terms alone. Their guide is owned by the prior
(``prior.global_guide``) and run by the amortized guide before its local sites:

- ``"map"``: ``Delta`` at learned points (MAP, like ``AutoDelta``);
- ``"mean-field"``: q(weights) = Dirichlet, q(loc) = Normal, q(scale) = LogNormal, independent,
  all reparameterised (like ``AutoNormal``; the Dirichlet by implicit reparameterisation).

The weights are sampled in float64: a sparse Dirichlet puts mass so close to 0 that float32
samples underflow to exact zeros, where its log density is infinite.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from torch import Tensor

from .priors import (
    MixturePrior,
    add_mixture_parameters,
    assign_param,
    diagonal_normal_component,
    weighted_normal_component,
)

__all__ = ["BayesianGaussianMixturePrior", "MAPGlobals", "MeanFieldGlobals"]

#: floor on the weights a MAP guide passes to the Dirichlet density (kept on the simplex)
WEIGHT_FLOOR = 1e-6


class MAPGlobals(PyroModule):
    """Point masses at learned weights (K,), loc (K, D) and scale (K, D)."""

    def __init__(self, num_clusters: int, latent_dim: int, min_scale: float) -> None:
        super().__init__()
        self.num_clusters = num_clusters
        self.min_scale = min_scale
        add_mixture_parameters(self, num_clusters, latent_dim, min_scale)

    def _floored_weights(self) -> Tensor:
        return (self.weights.double() + WEIGHT_FLOOR) / (1 + self.num_clusters * WEIGHT_FLOOR)

    def forward(self) -> None:
        pyro.sample("weights", dist.Delta(self._floored_weights(), event_dim=1))
        pyro.sample("loc", dist.Delta(self.loc, event_dim=2))
        pyro.sample("scale", dist.Delta(self.scale, event_dim=2))

    def point_estimates(self) -> dict[str, Tensor]:
        return {"weights": self.weights, "loc": self.loc, "scale": self.scale}

    def set_point(self, weights: Tensor, loc: Tensor, scale: Tensor) -> None:
        assign_param(self, "weights", weights)
        assign_param(self, "loc", loc)
        assign_param(self, "scale", scale)


class MeanFieldGlobals(PyroModule):
    """Independent Dirichlet, Normal and LogNormal posteriors; point estimates are the
    posterior mean of the weights, the mean of loc and the median of scale."""

    def __init__(
        self, num_clusters: int, latent_dim: int, min_scale: float, init_pseudo_count: float
    ) -> None:
        super().__init__()
        self.init_pseudo_count = init_pseudo_count
        self.min_scale = min_scale
        k, d = num_clusters, latent_dim
        self.weights_concentration = PyroParam(
            torch.full((k,), init_pseudo_count / k), constraints.greater_than(1e-3)
        )
        self.loc_loc = PyroParam(torch.randn(k, d))
        self.loc_scale = PyroParam(torch.full((k, d), 0.01), constraints.greater_than(1e-5))
        self.log_scale_loc = PyroParam(torch.zeros(k, d))
        self.log_scale_scale = PyroParam(torch.full((k, d), 0.01), constraints.greater_than(1e-5))

    def forward(self) -> None:
        pyro.sample("weights", dist.Dirichlet(self.weights_concentration.double()))
        pyro.sample("loc", dist.Normal(self.loc_loc, self.loc_scale).to_event(2))
        pyro.sample(
            "scale", dist.LogNormal(self.log_scale_loc, self.log_scale_scale).to_event(2)
        )

    def point_estimates(self) -> dict[str, Tensor]:
        conc = self.weights_concentration
        return {
            "weights": conc / conc.sum(),
            "loc": self.loc_loc,
            "scale": self.log_scale_loc.exp().clamp_min(self.min_scale),
        }

    def set_point(self, weights: Tensor, loc: Tensor, scale: Tensor) -> None:
        """Centre the posteriors on a point; the weights get ``init_pseudo_count`` in all."""
        weights = torch.as_tensor(weights)
        assign_param(self, "weights_concentration",
                     (weights * self.init_pseudo_count).clamp_min(2e-3))
        assign_param(self, "loc_loc", loc)
        assign_param(self, "log_scale_loc", torch.as_tensor(scale).log())


GLOBAL_GUIDES = ("map", "mean-field")


class BayesianGaussianMixturePrior(MixturePrior):
    """The Gaussian mixture with priors on its weights, means and scales (module docstring).

    Args:
        num_clusters: K; latent_dim: D.
        concentration: the symmetric Dirichlet's per-cluster concentration (< 1 is sparse and
            lets an over-complete K switch clusters off).
        global_guide: "map" or "mean-field".
        loc_prior_scale, scale_prior_scale: spreads of the Normal and LogNormal priors.
        min_scale: floor on the component scales the model uses.
        init_pseudo_count: total Dirichlet concentration of the mean-field guide at set-up.
    """

    def __init__(
        self,
        num_clusters: int,
        latent_dim: int,
        concentration: float = 1.0,
        global_guide: str = "map",
        loc_prior_scale: float = 10.0,
        scale_prior_scale: float = 1.5,
        min_scale: float = 1e-3,
        init_pseudo_count: float = 1000.0,
    ) -> None:
        super().__init__(num_clusters, latent_dim)
        if not concentration > 0:
            raise ValueError(f"the Dirichlet concentration must be positive, got {concentration}")
        if global_guide not in GLOBAL_GUIDES:
            raise ValueError(
                f"global_guide must be one of {GLOBAL_GUIDES}, got {global_guide!r}"
            )
        self.min_scale = min_scale
        self.register_buffer(
            "concentration", torch.full((num_clusters,), float(concentration), dtype=torch.float64)
        )
        self.register_buffer("loc_prior_scale", torch.tensor(float(loc_prior_scale)))
        self.register_buffer("scale_prior_scale", torch.tensor(float(scale_prior_scale)))
        if global_guide == "map":
            self.global_guide = MAPGlobals(num_clusters, latent_dim, min_scale)
        else:
            self.global_guide = MeanFieldGlobals(
                num_clusters, latent_dim, min_scale, init_pseudo_count
            )

    def sample_parameters(self) -> dict[str, Tensor]:
        k, d = self.num_clusters, self.latent_dim
        weights = pyro.sample("weights", dist.Dirichlet(self.concentration))
        zero = self.loc_prior_scale.new_zeros(())
        loc = pyro.sample("loc", dist.Normal(zero, self.loc_prior_scale).expand((k, d)).to_event(2))
        scale = pyro.sample(
            "scale", dist.LogNormal(zero, self.scale_prior_scale).expand((k, d)).to_event(2)
        )
        return {
            "log_weights": weights.clamp_min(1e-300).log().to(loc.dtype),
            "loc": loc,
            "scale": scale.clamp_min(self.min_scale),
        }

    def point_parameters(self) -> dict[str, Tensor]:
        point = self.global_guide.point_estimates()
        return {
            "log_weights": point["weights"].clamp_min(1e-30).log(),
            "loc": point["loc"],
            "scale": point["scale"],
        }

    def component(self, params: dict[str, Tensor], c: Tensor) -> dist.TorchDistribution:
        return diagonal_normal_component(params, c)

    def relaxed_component(self, params: dict[str, Tensor], w: Tensor) -> dist.TorchDistribution:
        return weighted_normal_component(params, w)

    @torch.no_grad()
    def set_mixture(self, weights: Tensor, loc: Tensor, scale: Tensor) -> None:
        """Centre the global guide on a mixture: weights (K,), loc (K, D), scale (K, D)."""
        weights = torch.as_tensor(weights).clamp_min(1e-6)
        self.global_guide.set_point(
            weights / weights.sum(), torch.as_tensor(loc),
            torch.as_tensor(scale).clamp_min(2 * self.min_scale),
        )

    def weights_in_use(self, threshold: float | None = None) -> int:
        """How many clusters keep a point-estimate weight above ``threshold`` (default 1/(10K))."""
        threshold = 1.0 / (10 * self.num_clusters) if threshold is None else threshold
        return int((self.global_guide.point_estimates()["weights"] > threshold).sum())
