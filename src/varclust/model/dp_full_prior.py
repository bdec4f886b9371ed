"""The Dirichlet-process mixture prior with full covariances: Wishart priors on the precisions.

The model is ``dp``'s (:mod:`varclust.model.dp_prior`: truncated stick-breaking weights, Normal
priors on the means, the cluster enumerated), with each component's diagonal precision replaced
by a full precision matrix:

    v_k ~ Beta(1, alpha),  pi = stick_breaking(v)                  (K-1,) -> (K,)
    loc_k ~ Normal(m, diag(r))                                     (K, D)
    Lambda_k ~ Wishart(nu D, (nu diag(r))^-1)                      (K, D, D)
    c_n ~ Categorical(pi),  z_n | c_n ~ MultivariateNormal(loc[c_n], Lambda[c_n]^-1 + s^2 I)

m and r (D,) are the codes' mean and variance (empirical Bayes, as for ``dp``), nu is
``scale_pseudo_count`` and s = ``min_scale`` a floor on every component's spread. The Wishart's
mean is E[Lambda_k] = nu D (nu diag(r))^-1 = diag(D / r), and each diagonal precision is
marginally Gamma(nu D / 2, rate nu r_d / 2), exactly ``dp``'s prior on its diagonal precisions;
the full prior adds the correlations. For nu = 1 it is scikit-learn's
``BayesianGaussianMixture(covariance_type="full")`` prior (precision ~ Wishart(dof, W0) with
``degrees_of_freedom_prior`` = D and W0^-1 = ``covariance_prior`` = diag(r)); scikit-learn's own
default ``covariance_prior`` is the codes' full empirical covariance instead.

Why it exists (BENCHMARKS.md, issue 17): the diagonal DP covers an elongated or tilted cluster
of codes with several axis-aligned components, so on the pretrained digits codes scikit-learn's
diagonal DP mixture keeps 29 of 30 components (NMI 0.72), its full-covariance one with this
prior 15 to 16 (NMI 0.82 to 0.86). In the joint fit on the digits (truncation 30, 5 seeds) it
keeps 5 to 10, but by merging digits (NMI 0.725 +- 0.075 against 0.806 for K = 10), at the
diagonal DP's final ELBO: an option, not the default.

The variational posterior over the globals is mean-field: ``dp``'s q(v_k) = Beta(a_k, b_k) and
q(loc) = Normal, and q(Lambda_k) = Wishart(df_k, S_k S_k^T), df_k > D and S_k lower triangular,
(K,) and (K, D, D), sampled in float64 (a float32 Bartlett draw is often numerically singular,
and so is any draw whose df is near D - 1, where its last chi-square has almost no degrees of
freedom).
The ELBO is ``dp``'s with the global terms log p(Lambda) - log q(Lambda) in place of the scales';
the component densities use the Cholesky factor of Lambda_k^-1 + s^2 I, computed in float64 once
per draw of the globals.

Point estimates (``point_parameters``, used by ``predict``): ``dp``'s weights and means, and the
covariance E_q[Lambda_k]^-1 + s^2 I = (df_k S_k S_k^T)^-1 + s^2 I. Besides ``scale_tril`` (K, D, D),
the parameters carry ``scale`` (K, D), the components' marginal standard deviations (the square
roots of the covariances' diagonals), for what reads a mixture as diagonal (the mixture and
relaxed guides' start, ``summaries.mixture_parameters``, the InferenceData's ``mixture_scale``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroParam
from torch import Tensor

from .bayesian_prior import add_loc_posterior, sample_loc_posterior
from .dp_prior import DirichletProcessPrior, StickBreakingGlobals
from .priors import (
    assign_param,
    full_normal_component,
    spreads,
    weighted_full_normal_component,
)

__all__ = ["FullCovarianceDirichletProcessPrior", "WishartStickBreakingGlobals",
           "covariance_cholesky"]


def covariance_cholesky(precision: Tensor, min_scale: float) -> Tensor:
    """The lower Cholesky factor (..., D, D) of Lambda^-1 + min_scale^2 I for precision matrices
    Lambda (..., D, D), computed in float64 and returned in float32.

    A draw of Lambda that float64 cannot factor (a Bartlett draw with a chi-square of almost no
    degrees of freedom; kept rare by q's df > D) gets 1e-9 of its mean diagonal added first:
    its component's covariance is then huge, so its density on the codes is negligible either
    way."""
    precision = precision.double()
    eye = torch.eye(precision.shape[-1], dtype=torch.float64, device=precision.device)
    tril, info = torch.linalg.cholesky_ex(precision)
    if bool((info > 0).any()):
        jitter = 1e-9 * precision.diagonal(dim1=-2, dim2=-1).mean(-1).abs().clamp_min(1e-30)
        failed = (info > 0)[..., None, None]
        tril = torch.linalg.cholesky(torch.where(failed, precision + jitter[..., None, None] * eye,
                                                 precision))
    covariance = torch.cholesky_inverse(tril)
    return torch.linalg.cholesky(covariance + min_scale**2 * eye).float()


@contextmanager
def quiet_wishart() -> Iterator[None]:
    """Silence torch's "Singular sample detected" from ``Wishart.rsample``: its first check is
    inverted (torch 2.14: it flags the positive-definite draws and redraws them once, which
    keeps their law), so it fires on nearly every draw. A truly singular draw is handled by
    :func:`covariance_cholesky`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Singular sample detected")
        yield


class WishartStickBreakingGlobals(StickBreakingGlobals):
    """The mean-field guide of the full-covariance DP's globals: ``dp``'s q(sticks) and q(loc),
    and q(Lambda_k) = Wishart(df_k, scale_tril S_k), (K,) and (K, D, D) (module docstring)."""

    def init_components(self, num_clusters: int, latent_dim: int) -> None:
        """q(loc) = Normal (K, D) as ``dp``'s; q(Lambda) with ``init_pseudo_count`` degrees of
        freedom around the identity."""
        add_loc_posterior(self, num_clusters, latent_dim)
        df = float(self.init_pseudo_count)
        # df > D: every chi-square of the Bartlett draw keeps > 1 degree of freedom (near
        # D - 1 the last one has almost none, and the draws are numerically singular)
        self.precision_df = PyroParam(torch.full((num_clusters,), df),
                                      constraints.greater_than(float(latent_dim)))
        self.precision_tril = PyroParam(torch.eye(latent_dim).repeat(num_clusters, 1, 1) / df**0.5,
                                        constraints.lower_cholesky)

    def sample_components(self) -> None:
        """The sites ``loc`` (K, D) and ``precision`` (K, D, D), the latter in float64."""
        sample_loc_posterior(self)
        with quiet_wishart():
            pyro.sample("precision", dist.Wishart(
                self.precision_df.double(), scale_tril=self.precision_tril.double()).to_event(1))

    def mean_precision(self) -> Tensor:
        """E_q[Lambda_k] = df_k S_k S_k^T: (K, D, D)."""
        tril = self.precision_tril
        return self.precision_df[:, None, None] * (tril @ tril.transpose(-1, -2))

    def component_estimates(self) -> dict[str, Tensor]:
        """loc (K, D); scale_tril (K, D, D), the Cholesky factor of E[Lambda]^-1 + s^2 I; and
        scale (K, D), its marginal standard deviations."""
        return {"loc": self.loc_loc,
                **spreads(covariance_cholesky(self.mean_precision(), self.min_scale))}

    def centre_components(self, loc: Tensor, scale: Tensor) -> None:
        """q(loc) at loc (K, D); q(Lambda_k) with mean diag(1 / scale_k^2) (scale (K, D)) and
        ``init_pseudo_count`` degrees of freedom."""
        assign_param(self, "loc_loc", torch.as_tensor(loc))
        df = torch.full_like(self.precision_df, self.init_pseudo_count)
        assign_param(self, "precision_df", df)
        assign_param(self, "precision_tril",
                     torch.diag_embed(1 / torch.as_tensor(scale)) / df[:, None, None].sqrt())


class FullCovarianceDirichletProcessPrior(DirichletProcessPrior):
    """The truncated stick-breaking mixture prior with full covariances (module docstring).

    Takes :class:`~varclust.model.dp_prior.DirichletProcessPrior`'s arguments; ``min_scale``
    is added to every component's spread (s^2 I in the covariance) and ``scale_pseudo_count``
    is the Wishart's nu.
    """

    global_guide_type = WishartStickBreakingGlobals

    def __init__(self, num_clusters: int, latent_dim: int, **options) -> None:
        super().__init__(num_clusters, latent_dim, **options)
        if not self.scale_pseudo_count * latent_dim > latent_dim - 1:
            raise ValueError(
                f"the Wishart prior of dp-full needs more than D - 1 = {latent_dim - 1} degrees "
                f"of freedom, got nu D = {self.scale_pseudo_count * latent_dim:g} "
                f"(dp_scale_pseudo_count {self.scale_pseudo_count:g}); raise "
                f"dp_scale_pseudo_count above {(latent_dim - 1) / latent_dim:.3g}")

    def sample_spreads(self) -> dict[str, Tensor]:
        """``precision`` ~ Wishart(nu D, (nu diag(r))^-1) (K, D, D), sampled in float64, as
        the components' ``scale_tril`` (K, D, D) and marginal ``scale`` (K, D)."""
        nu = self.scale_pseudo_count
        wishart_tril = torch.diag((nu * self.code_variance.double()).rsqrt())
        with quiet_wishart():
            precision = pyro.sample("precision", dist.Wishart(
                wishart_tril.new_tensor(nu * self.latent_dim), scale_tril=wishart_tril
            ).expand((self.num_clusters,)).to_event(1))
        return spreads(covariance_cholesky(precision, self.min_scale))

    def component(self, params: dict[str, Tensor], c: Tensor) -> dist.TorchDistribution:
        """MultivariateNormal(loc[c], scale_tril[c]): batch shape ``c.shape``, event (D,)."""
        return full_normal_component(params, c)

    def relaxed_component(self, params: dict[str, Tensor], w: Tensor) -> dist.TorchDistribution:
        """The law of z = sum_k w_k z_k with independent z_k ~ component k; w (..., B, K)."""
        return weighted_full_normal_component(params, w)
