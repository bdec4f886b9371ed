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

from .priors import DiagonalGaussianMixture, add_mixture_parameters, assign_param

__all__ = ["BayesianGaussianMixturePrior", "GlobalGuidedMixture", "MAPGlobals",
           "MeanFieldGlobals"]

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
        self.weights_concentration = PyroParam(
            torch.full((num_clusters,), init_pseudo_count / num_clusters),
            constraints.greater_than(1e-3),
        )
        add_component_posteriors(self, num_clusters, latent_dim)

    def forward(self) -> None:
        pyro.sample("weights", dist.Dirichlet(self.weights_concentration.double()))
        sample_component_posteriors(self)

    def point_estimates(self) -> dict[str, Tensor]:
        conc = self.weights_concentration
        return {"weights": conc / conc.sum(), **component_point_estimates(self)}

    def set_point(self, weights: Tensor, loc: Tensor, scale: Tensor) -> None:
        """Centre the posteriors on a point; the weights get ``init_pseudo_count`` in all."""
        weights = torch.as_tensor(weights)
        assign_param(self, "weights_concentration",
                     (weights * self.init_pseudo_count).clamp_min(2e-3))
        centre_component_posteriors(self, loc, scale)


def add_component_posteriors(module: PyroModule, num_clusters: int, latent_dim: int) -> None:
    """Give ``module`` the mean-field posteriors of the components: q(loc) = Normal(loc_loc,
    loc_scale) and q(scale) = LogNormal(log_scale_loc, log_scale_scale), each (K, D), narrow
    (0.01) around standard normal means and unit scales. ``module.min_scale`` must be set."""
    k, d = num_clusters, latent_dim
    add_loc_posterior(module, k, d)
    module.log_scale_loc = PyroParam(torch.zeros(k, d))
    module.log_scale_scale = PyroParam(torch.full((k, d), 0.01), constraints.greater_than(1e-5))


def add_loc_posterior(module: PyroModule, num_clusters: int, latent_dim: int) -> None:
    """Give ``module`` q(loc) = Normal(loc_loc, loc_scale), (K, D), narrow (0.01) around
    standard normal means."""
    module.loc_loc = PyroParam(torch.randn(num_clusters, latent_dim))
    module.loc_scale = PyroParam(torch.full((num_clusters, latent_dim), 0.01),
                                 constraints.greater_than(1e-5))


def sample_loc_posterior(module: PyroModule) -> None:
    """The guide's ``loc`` site (K, D) from :func:`add_loc_posterior`."""
    pyro.sample("loc", dist.Normal(module.loc_loc, module.loc_scale).to_event(2))


def sample_component_posteriors(module: PyroModule) -> None:
    """The guide's ``loc`` and ``scale`` sites (K, D) from :func:`add_component_posteriors`."""
    sample_loc_posterior(module)
    pyro.sample(
        "scale", dist.LogNormal(module.log_scale_loc, module.log_scale_scale).to_event(2)
    )


def component_point_estimates(module: PyroModule) -> dict[str, Tensor]:
    """The posterior mean of ``loc`` and the median of ``scale`` (floored at min_scale)."""
    return {"loc": module.loc_loc,
            "scale": module.log_scale_loc.exp().clamp_min(module.min_scale)}


def centre_component_posteriors(module: PyroModule, loc: Tensor, scale: Tensor) -> None:
    """Centre q(loc) on loc (K, D) and q(scale) on scale (K, D); their spreads are kept."""
    assign_param(module, "loc_loc", loc)
    assign_param(module, "log_scale_loc", torch.as_tensor(scale).log())


def sample_component_priors(
    num_clusters: int, latent_dim: int, loc_prior_scale: Tensor, scale_prior_scale: Tensor
) -> tuple[Tensor, Tensor]:
    """The model's ``loc`` ~ Normal(0, loc_prior_scale) and ``scale`` ~ LogNormal(0,
    scale_prior_scale) sites, each (K, D), outside the data plate."""
    shape = (num_clusters, latent_dim)
    zero = loc_prior_scale.new_zeros(())
    loc = pyro.sample("loc", dist.Normal(zero, loc_prior_scale).expand(shape).to_event(2))
    scale = pyro.sample(
        "scale", dist.LogNormal(zero, scale_prior_scale).expand(shape).to_event(2)
    )
    return loc, scale


def normalised_mixture(
    weights: Tensor, loc: Tensor, scale: Tensor, min_scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    """A mixture ready for a global guide: weights (K,) floored at 1e-6 and renormalised, loc
    (K, D) as a tensor, scale (K, D) floored at 2 * min_scale."""
    weights = torch.as_tensor(weights).clamp_min(1e-6)
    return (weights / weights.sum(), torch.as_tensor(loc),
            torch.as_tensor(scale).clamp_min(2 * min_scale))


class GlobalGuidedMixture(DiagonalGaussianMixture):
    """A diagonal Gaussian mixture whose weights, means and scales are random, with their guide
    ``self.global_guide`` (a PyroModule whose ``point_estimates()`` gives ``weights`` (K,),
    ``loc`` and ``scale`` (K, D)), which subclasses set up."""

    global_guide: PyroModule

    def globals_guide(self) -> PyroModule:
        return self.global_guide

    def point_parameters(self) -> dict[str, Tensor]:
        """``log_weights`` (K,) from the guide's point-estimate weights, and its components'
        estimates as they are (``loc``, ``scale``, ...)."""
        point = dict(self.global_guide.point_estimates())
        return {"log_weights": point.pop("weights").clamp_min(1e-30).log(), **point}

    def in_use_threshold(self) -> float:
        """The point-estimate weight above which a cluster counts as in use: 1/(10K)."""
        return 1.0 / (10 * self.num_clusters)

    def weights_in_use(self, threshold: float | None = None) -> int:
        """How many clusters keep a point-estimate weight above ``threshold`` (default
        :meth:`in_use_threshold`)."""
        threshold = self.in_use_threshold() if threshold is None else threshold
        return int((self.global_guide.point_estimates()["weights"] > threshold).sum())

    def epoch_summary(self) -> dict[str, float]:
        return {"clusters_in_use": float(self.weights_in_use())}


GLOBAL_GUIDES = ("map", "mean-field")


class BayesianGaussianMixturePrior(GlobalGuidedMixture):
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
        weights = pyro.sample("weights", dist.Dirichlet(self.concentration))
        loc, scale = sample_component_priors(self.num_clusters, self.latent_dim,
                                             self.loc_prior_scale, self.scale_prior_scale)
        return {
            "log_weights": weights.clamp_min(1e-300).log().to(loc.dtype),
            "loc": loc,
            "scale": scale.clamp_min(self.min_scale),
        }

    @torch.no_grad()
    def set_mixture(self, weights: Tensor, loc: Tensor, scale: Tensor) -> None:
        """Centre the global guide on a mixture: weights (K,), loc (K, D), scale (K, D)."""
        self.global_guide.set_point(*normalised_mixture(weights, loc, scale, self.min_scale))

