"""Priors over the latent code: the mixture base class and the learned Gaussian mixture.

A prior is a PyroModule the model calls in two steps (:class:`ClusteringModel`):

1. ``params = prior.sample_parameters()`` outside the ``data`` plate: the mixture's global
   parameters, point values for a point-estimated prior or ``pyro.sample`` sites for a Bayesian
   one (:mod:`varclust.model.bayesian_prior`);
2. ``z = prior(params, cluster, cluster_mask)`` inside the plate: emits the ``cluster`` site
   (enumerated; observed where ``cluster_mask`` is true, in semi-supervised fits) and ``z``.

:class:`MixturePrior` implements both from two methods a subclass defines:
``point_parameters()`` (a dict with ``log_weights`` (K,) and whatever the components need) and
``component(params, c)`` (the distribution of z given cluster indices c).

The relaxed model of the Variational Clustering guide (:mod:`varclust.guides.relaxed`) calls
:meth:`MixturePrior.relaxed` instead of ``forward``: the cluster is a relaxed one-hot w on the
simplex (its log drawn from an ExpConcrete with the mixture weights) and z | w is
:meth:`MixturePrior.relaxed_component`, which Gaussian mixtures define as the w-weighted sum of
one code per component.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from pyro.ops.indexing import Vindex
from torch import Tensor
from torch.distributions import transform_to

from ..data.validation import check_num_clusters
from .relaxed_categorical import ExpRelaxedCategorical

__all__ = [
    "DiagonalGaussianMixture",
    "GaussianMixturePrior",
    "MixturePrior",
    "add_mixture_parameters",
    "assign_param",
    "assign_weights_and_loc",
    "full_normal_component",
    "spreads",
    "weighted_full_normal_component",
    "weighted_normal_component",
]


class MixturePrior(PyroModule):
    """Base class of mixture priors p(c) p(z | c) over K clusters and D-dimensional codes.

    Subclasses define :meth:`point_parameters` and :meth:`component`; Bayesian subclasses
    also override :meth:`sample_parameters`. Everything else (the model's sites, the cluster
    posterior used by ``predict``, sampling a cluster) follows from those.
    """

    #: True for a prior whose K is an upper bound it switches clusters off below (the
    #: Dirichlet process): the collapse guard then does not expect K/2 clusters in use
    prunes_clusters: bool = False

    def __init__(self, num_clusters: int, latent_dim: int) -> None:
        check_num_clusters(num_clusters)
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be at least 1, got {latent_dim}")
        super().__init__()
        self.num_clusters = num_clusters
        self.latent_dim = latent_dim

    def point_parameters(self) -> dict[str, Tensor]:
        """The mixture's parameters as point values: ``log_weights`` (K,) and the components'."""
        raise NotImplementedError

    def component(self, params: dict[str, Tensor], c: Tensor) -> dist.TorchDistribution:
        """p(z | c): batch shape ``c.shape``, event shape (D,)."""
        raise NotImplementedError

    def sample_parameters(self) -> dict[str, Tensor]:
        """The parameters for one run of the model, called outside the data plate."""
        return self.point_parameters()

    #: True for a prior whose clusters are a mixture fitted to the codes after each epoch
    #: (:meth:`fit_to_codes`; the standard normal) rather than parameters of the model
    fits_clusters_to_codes: bool = False

    def set_mixture(self, weights: Tensor, loc: Tensor, scale: Tensor) -> None:
        """Start the prior at the mixture fitted to the pretrained codes: weights (K,), loc
        (K, D), scale (K, D); component k becomes the prior's component k (the guide's cluster
        heads and the labels of a semi-supervised fit are tied to k). Default: nothing (a prior
        without a learned mixture)."""

    def component_order(self, weights: Tensor) -> Tensor:
        """The order (K,), a permutation, in which this prior would take a new mixture's
        components with weights (K,), when nothing else (labels) fixes it. Default: as given."""
        return torch.arange(len(weights), device=weights.device)

    def fit_to_codes(self, codes: Tensor, seed: int) -> None:
        """Refit the clusters to the codes (N, D); called after every epoch when
        :attr:`fits_clusters_to_codes`. Default: nothing."""

    def end_epoch(self, codes: Callable[[], tuple[Tensor, Tensor]], seed: int) -> None:
        """Called after every SVI epoch with ``codes``, a function that encodes the data set:
        () -> (loc, scale) of q(z | x), each (N, D) (called only by a prior that needs them).
        Default: :meth:`fit_to_codes` on the means for a prior that
        :attr:`fits_clusters_to_codes`, else nothing."""
        if self.fits_clusters_to_codes:
            self.fit_to_codes(codes()[0], seed)

    def globals_guide(self) -> Callable[[], None] | None:
        """The guide of the prior's global sites, which the amortized guide runs before its
        local sites (a Bayesian prior's), or None for point-estimated globals. Default: None."""
        return None

    def settle_on_codes(self, codes: Tensor, seed: int) -> None:
        """Called once after :meth:`set_mixture` at the start of a fit with the pretrained codes
        (N, D): a prior whose globals need more steps than the fit gives them (the DP's sticks)
        fits them to the codes here. Default: nothing."""

    def epoch_summary(self) -> dict[str, float]:
        """Numbers recorded with each epoch's history (e.g. the clusters in use). Default: none."""
        return {}

    def forward(
        self,
        params: dict[str, Tensor] | None = None,
        cluster: Tensor | None = None,
        cluster_mask: Tensor | None = None,
    ) -> Tensor:
        """Inside the data plate: sample ``cluster`` (enumerated) and ``z``; returns z (..., B, D).

        Args:
            params: from :meth:`sample_parameters` (default: :meth:`point_parameters`).
            cluster: (B,) observed clusters, read only where ``cluster_mask`` is true.
            cluster_mask: (B,) bool; with it, ``cluster`` is split, as Pyro's ``obs_mask`` does,
                into the observed site ``cluster_observed`` and the enumerated site
                ``cluster_unobserved``, each masked to its part of the batch.
        """
        params = self.point_parameters() if params is None else params
        prior_c = dist.Categorical(logits=params["log_weights"])
        if cluster_mask is None:
            c = pyro.sample("cluster", prior_c, infer={"enumerate": "parallel"})
        else:
            # Pyro's obs_mask split, written out because pyro.sample(obs_mask=...) drops `infer`
            # (the unobserved part would be sampled, not enumerated)
            with poutine.mask(mask=cluster_mask):
                pyro.sample("cluster_observed", prior_c, obs=cluster)
            with poutine.mask(mask=~cluster_mask):
                free = pyro.sample(
                    "cluster_unobserved", prior_c, infer={"enumerate": "parallel"}
                )
            c = torch.where(cluster_mask, cluster, free)
        return pyro.sample("z", self.component(params, c))

    def relaxed_component(self, params: dict[str, Tensor], w: Tensor) -> dist.TorchDistribution:
        """p(z | w) of the relaxed model for weights w (..., B, K) on the simplex: batch shape
        (..., B), event shape (D,). Priors without a relaxed form refuse the relaxed guide."""
        raise ValueError(
            f"the prior {type(self).__name__} has no relaxed form p(z | w), so the relaxed guide "
            "cannot be used with it; choose prior='gmm' or 'bayes-gmm', or guide='marginal'"
        )

    def relaxed(
        self,
        params: dict[str, Tensor],
        temperature: Tensor,
        cluster: Tensor | None = None,
        cluster_mask: Tensor | None = None,
    ) -> Tensor:
        """Inside the data plate, the relaxed model's sites; returns z (..., B, D).

        ``cluster_log_weights`` y = log w ~ ExpConcrete(temperature, log_weights) (Maddison et
        al. 2017; w = exp(y) is RelaxedOneHotCategorical), then ``z`` ~ p(z | w)
        (:meth:`relaxed_component`). In semi-supervised batches the labelled data observe
        ``cluster_observed`` ~ Categorical(weights) and take w = one_hot(label); the relaxed site
        is masked to the unlabelled data.
        """
        log_weights = params["log_weights"]
        relaxed = ExpRelaxedCategorical(temperature, logits=log_weights)
        with poutine.mask(mask=True if cluster_mask is None else ~cluster_mask):
            w = pyro.sample("cluster_log_weights", relaxed).exp()
        if cluster_mask is not None:
            with poutine.mask(mask=cluster_mask):
                pyro.sample("cluster_observed", dist.Categorical(logits=log_weights), obs=cluster)
            w = labelled_weights(w, cluster, cluster_mask)
        return pyro.sample("z", self.relaxed_component(params, w))

    def log_joint(self, z: Tensor) -> Tensor:
        """log p(c = k, z) for every k at the point parameters: z (..., D) -> (..., K)."""
        params = self.point_parameters()
        clusters = torch.arange(self.num_clusters, device=z.device)
        log_comp = self.component(params, clusters).log_prob(z.unsqueeze(-2))
        return log_comp + params["log_weights"].log_softmax(-1)

    def sample_component(self, k: int, num_samples: int) -> Tensor:
        """Draw z from component k: returns (num_samples, D)."""
        if not 0 <= k < self.num_clusters:
            raise ValueError(f"cluster must be in [0, {self.num_clusters - 1}], got {k}")
        params = self.point_parameters()
        c = torch.full((num_samples,), k, dtype=torch.long, device=params["log_weights"].device)
        return self.component(params, c).sample()


def labelled_weights(w: Tensor, cluster: Tensor, cluster_mask: Tensor) -> Tensor:
    """w (..., B, K) with the labelled rows (``cluster_mask`` (B,)) set to one_hot(cluster)."""
    labelled = torch.nn.functional.one_hot(cluster, w.shape[-1]).to(w.dtype)
    return torch.where(cluster_mask.unsqueeze(-1), labelled, w)


def weighted_normal_component(params: dict[str, Tensor], w: Tensor) -> dist.TorchDistribution:
    """p(z | w) = Normal(sum_k w_k loc_k, sqrt(sum_k w_k^2 scale_k^2)): the law of
    z = sum_k w_k z_k with independent z_k ~ Normal(loc_k, scale_k). w (..., B, K) ->
    batch shape (..., B), event shape (D,); at a corner w = e_k it is component k."""
    loc = w @ params["loc"]
    scale = (w**2 @ params["scale"] ** 2).sqrt()
    return dist.Normal(loc, scale).to_event(1)


def diagonal_normal_component(
    params: dict[str, Tensor], c: Tensor
) -> dist.TorchDistribution:
    """Normal(loc[c], scale[c]) from ``params`` with ``loc`` and ``scale`` (K, D)."""
    loc = Vindex(params["loc"])[..., c, :]
    scale = Vindex(params["scale"])[..., c, :]
    return dist.Normal(loc, scale).to_event(1)


def full_normal_component(params: dict[str, Tensor], c: Tensor) -> dist.TorchDistribution:
    """MultivariateNormal(loc[c], scale_tril[c]) from ``params`` with ``loc`` (K, D) and
    ``scale_tril`` (K, D, D): batch shape ``c.shape``, event shape (D,)."""
    return dist.MultivariateNormal(Vindex(params["loc"])[..., c, :],
                                   scale_tril=Vindex(params["scale_tril"])[..., c, :, :])


def spreads(scale_tril: Tensor) -> dict[str, Tensor]:
    """``scale_tril`` (..., K, D, D) and the marginal standard deviations ``scale`` (..., K, D)
    (the norms of scale_tril's rows)."""
    return {"scale_tril": scale_tril, "scale": scale_tril.pow(2).sum(-1).sqrt()}


def weighted_full_normal_component(params: dict[str, Tensor], w: Tensor
                                   ) -> dist.TorchDistribution:
    """The law of z = sum_k w_k z_k with independent z_k ~ MultivariateNormal(loc_k, Sigma_k),
    Sigma_k = scale_tril_k scale_tril_k^T: MultivariateNormal(sum_k w_k loc_k, sum_k w_k^2
    Sigma_k). w (..., B, K) -> batch shape (..., B), event shape (D,); at a corner w = e_k it is
    component k."""
    tril = params["scale_tril"]
    covariance = torch.einsum("...k,...kde->...de", w**2, tril @ tril.transpose(-1, -2))
    return dist.MultivariateNormal(w @ params["loc"], covariance_matrix=covariance)


class DiagonalGaussianMixture(MixturePrior):
    """A mixture of diagonal Gaussians: p(z | c) = Normal(loc[c], scale[c]) from the
    parameters' ``loc`` and ``scale`` (K, D), and the relaxed form the law of the w-weighted sum
    of one code per component (:func:`weighted_normal_component`)."""

    def component(self, params: dict[str, Tensor], c: Tensor) -> dist.TorchDistribution:
        return diagonal_normal_component(params, c)

    def relaxed_component(self, params: dict[str, Tensor], w: Tensor) -> dist.TorchDistribution:
        return weighted_normal_component(params, w)


class GaussianMixturePrior(DiagonalGaussianMixture):
    """c ~ Categorical(weights), z | c ~ Normal(loc[c], scale[c]) with diagonal scales.

    Parameters (point estimates, learned with the networks):
        weights: (K,) on the simplex.
        loc: (K, D) component means.
        scale: (K, D) component scales, bounded below by ``min_scale``.

    Called inside the model's ``data`` plate it emits the sites ``cluster`` (enumerated in
    parallel, so ``TraceEnum_ELBO`` sums it out exactly) and ``z``, and returns z.
    """

    def __init__(self, num_clusters: int, latent_dim: int, min_scale: float = 1e-3) -> None:
        super().__init__(num_clusters, latent_dim)
        self.min_scale = min_scale
        add_mixture_parameters(self, num_clusters, latent_dim, min_scale)

    def point_parameters(self) -> dict[str, Tensor]:
        return {
            "log_weights": self.weights.clamp_min(1e-30).log(),
            "loc": self.loc,
            "scale": self.scale,
        }

    @torch.no_grad()
    def set_mixture(self, weights: Tensor, loc: Tensor, scale: Tensor) -> None:
        """Overwrite the mixture in place (optimisers keep tracking the same parameters).

        Args:
            weights: (K,) non-negative, renormalised and floored at 1e-6.
            loc: (K, D).
            scale: (K, D) positive, floored just above ``min_scale``.
        """
        assign_weights_and_loc(self, weights, loc)
        assign_param(self, "scale", torch.as_tensor(scale).clamp_min(2 * self.min_scale))


def assign_weights_and_loc(module: PyroModule, weights: Tensor, loc: Tensor) -> None:
    """Write ``weights`` (K,) (non-negative; floored at 1e-6 and renormalised) and ``loc``
    (K, D) into ``module``'s PyroParams of those names, in place."""
    weights = torch.as_tensor(weights).clamp_min(1e-6)
    assign_param(module, "weights", weights / weights.sum())
    assign_param(module, "loc", torch.as_tensor(loc))


def add_mixture_parameters(
    module: PyroModule, num_clusters: int, latent_dim: int, min_scale: float
) -> None:
    """Give ``module`` learned mixture parameters: ``weights`` (K,) on the simplex (uniform),
    ``loc`` (K, D) (standard normal draws) and ``scale`` (K, D) > min_scale (ones)."""
    module.weights = PyroParam(
        torch.full((num_clusters,), 1.0 / num_clusters), constraints.simplex
    )
    module.loc = PyroParam(torch.randn(num_clusters, latent_dim))
    module.scale = PyroParam(
        torch.ones(num_clusters, latent_dim), constraints.greater_than(min_scale)
    )


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
