"""The learned Gaussian mixture with full covariances (``prior="gmm-full"``).

The model is ``gmm``'s (:class:`~varclust.model.priors.GaussianMixturePrior`) with each
component's diagonal scale replaced by a lower-triangular Cholesky factor L_k:

    c_n ~ Categorical(pi),  z_n | c_n ~ MultivariateNormal(loc[c_n], L[c_n] L[c_n]^T)

with pi (K,), loc (K, D) and L (K, D, D) point estimates learned with the networks, the diagonal
of every L_k bounded below by ``min_scale``. A diagonal mixture covers a tilted or elongated
cluster of codes with several axis-aligned components, or pushes the encoder to align its
codes with the axes; this prior takes the correlations into the model instead (as
scikit-learn's ``GaussianMixture(covariance_type="full")`` does for a fit to fixed codes, and
``dp-full`` for the Dirichlet process). It costs K(D + 1)D/2 parameters instead of KD and a
triangular solve per component in each density.

The relaxed model (:mod:`varclust.guides.relaxed`) takes z | w as the law of z = sum_k w_k z_k
with independent z_k ~ component k: MultivariateNormal(sum_k w_k loc_k, sum_k w_k^2 Sigma_k),
which at a corner w = e_k is component k, as for the diagonal mixture.

The pretrained start is the diagonal mixture fitted to the codes (``set_mixture``): each
component starts with the codes' marginal variances and no correlations, and learns its
correlations in the joint fit. A full-covariance start was measured and removed (BENCHMARKS.md,
"gmm-full after pretraining: the start stays diagonal"): an autoencoder's codes lie near a
low-dimensional surface inside each cluster, so the covariance of a cluster's codes has
eigenvalues of 2e-4 to 3e-3 across that surface against 0.7 to 5 along it (UCI digits). Started
there, with the covariance of the codes (one M-step of a full-covariance EM, weights and means
held), every digits fit collapsed into one or two clusters (ACC 0.116 +- 0.032, 5 seeds): the
draws of q(z | x) fell many standard deviations outside their own component across the surface
and inside the broadest one. With q's starting variance s0^2 I added (the exact M-step of the
Jensen bound of the prior term, E_q[(z - loc_k)(z - loc_k)^T] under q = Normal(code, s0^2 I))
it still reached only 0.479 +- 0.140, against 0.804 +- 0.024 for the diagonal start (gmm:
0.805 +- 0.028; 5 seeds each, the pretrained recipe, marginal guide).

Point parameters: ``log_weights`` (K,), ``loc`` (K, D), ``scale_tril`` (K, D, D) and ``scale``
(K, D), the components' marginal standard deviations (the norms of L_k's rows), for what reads
a mixture as diagonal (the mixture and relaxed guides' start, the revival of dead clusters,
``summaries.mixture_parameters``).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroParam
from torch import Tensor

from .priors import (
    MixturePrior,
    assign_param,
    assign_weights_and_loc,
    full_normal_component,
    spreads,
    weighted_full_normal_component,
)

__all__ = ["FullCovarianceGaussianMixturePrior"]


class FullCovarianceGaussianMixturePrior(MixturePrior):
    """c ~ Categorical(weights), z | c ~ MultivariateNormal(loc[c], scale_tril[c]).

    Parameters (point estimates, learned with the networks):
        weights: (K,) on the simplex (uniform at the start).
        loc: (K, D) component means (standard normal draws at the start).
        scale_diagonal: (K, D) the Cholesky factors' diagonals, above ``min_scale`` (ones).
        scale_lower: (K, D, D) whose strictly lower triangle is the factors' (zeros).

    ``scale_tril`` (K, D, D) = tril(scale_lower, -1) + diag(scale_diagonal).
    """

    def __init__(self, num_clusters: int, latent_dim: int, min_scale: float = 1e-3) -> None:
        super().__init__(num_clusters, latent_dim)
        self.min_scale = min_scale
        self.weights = PyroParam(
            torch.full((num_clusters,), 1.0 / num_clusters), constraints.simplex
        )
        self.loc = PyroParam(torch.randn(num_clusters, latent_dim))
        self.scale_diagonal = PyroParam(
            torch.ones(num_clusters, latent_dim), constraints.greater_than(min_scale)
        )
        self.scale_lower = PyroParam(torch.zeros(num_clusters, latent_dim, latent_dim))

    @property
    def scale_tril(self) -> Tensor:
        """The components' Cholesky factors (K, D, D)."""
        return self.scale_lower.tril(-1) + torch.diag_embed(self.scale_diagonal)

    def point_parameters(self) -> dict[str, Tensor]:
        return {"log_weights": self.weights.clamp_min(1e-30).log(), "loc": self.loc,
                **spreads(self.scale_tril)}

    def component(self, params: dict[str, Tensor], c: Tensor) -> dist.TorchDistribution:
        return full_normal_component(params, c)

    def relaxed_component(self, params: dict[str, Tensor], w: Tensor) -> dist.TorchDistribution:
        return weighted_full_normal_component(params, w)

    @torch.no_grad()
    def set_mixture(self, weights: Tensor, loc: Tensor, scale: Tensor) -> None:
        """Overwrite the weights (K,), the means (K, D) and the marginal standard deviations
        (K, D) in place; each component keeps its correlations: the rows of its Cholesky factor
        are rescaled to the new marginal scales (from the start's identity factors the
        components are then diagonal, as a diagonal mixture fitted to the codes gives them).

        Args:
            weights: (K,) non-negative, renormalised and floored at 1e-6.
            loc: (K, D).
            scale: (K, D) positive, floored just above ``min_scale``.
        """
        assign_weights_and_loc(self, weights, loc)
        tril = self.scale_tril
        scale = torch.as_tensor(scale).to(tril).clamp_min(2 * self.min_scale)
        rescaled = tril * (scale / tril.pow(2).sum(-1).sqrt()).unsqueeze(-1)
        # a row's diagonal entry is at most its norm, so it may fall below the floor: lift it
        assign_param(self, "scale_diagonal",
                     rescaled.diagonal(dim1=-2, dim2=-1).clamp_min(2 * self.min_scale))
        assign_param(self, "scale_lower", rescaled.tril(-1))
