"""The standard-normal prior of a plain VAE; clusters come from a mixture fitted to its codes."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import Tensor

from .mixture_fit import fit_mixture_to_codes
from .priors import MixturePrior, diagonal_normal_component

__all__ = ["StandardNormalPrior"]


class StandardNormalPrior(MixturePrior):
    """z ~ Normal(0, I): a plain VAE. The model still draws a ``cluster`` from a uniform
    Categorical(K) that z does not depend on, so that every guide (also those that enumerate the
    cluster) is a valid guide for it; the marginal of z is exactly Normal(0, I).

    Clusters are found after training: :meth:`fit_to_codes` fits a diagonal Gaussian mixture
    (scikit-learn) to the codes, stored in buffers (``fitted_weights`` (K,), ``fitted_loc``
    (K, D), ``fitted_scale`` (K, D)) so checkpoints keep it; :meth:`log_joint` (hence
    ``predict``) and :meth:`sample_component` use that mixture. ``VarClust.fit`` refits it after
    every epoch.
    """

    fits_clusters_to_codes = True

    def __init__(self, num_clusters: int, latent_dim: int, n_init: int = 3) -> None:
        super().__init__(num_clusters, latent_dim)
        self.n_init = n_init
        self.register_buffer("fitted_weights", torch.full((num_clusters,), 1.0 / num_clusters))
        self.register_buffer("fitted_loc", torch.zeros(num_clusters, latent_dim))
        self.register_buffer("fitted_scale", torch.ones(num_clusters, latent_dim))
        self.register_buffer("fitted", torch.tensor(False))

    def point_parameters(self) -> dict[str, Tensor]:
        return {"log_weights": torch.zeros(self.num_clusters, device=self.fitted_loc.device)}

    def component(self, params: dict[str, Tensor], c: Tensor) -> dist.TorchDistribution:
        zero = self.fitted_loc.new_zeros(())
        return dist.Normal(zero, 1.0).expand((*c.shape, self.latent_dim)).to_event(1)

    @torch.no_grad()
    def fit_to_codes(self, codes: Tensor, seed: int) -> None:
        """Fit the K-component mixture that defines the clusters to codes (N, D)."""
        weights, loc, scale = fit_mixture_to_codes(codes, self.num_clusters, seed, self.n_init)
        device = self.fitted_loc.device
        self.fitted_weights.copy_(weights.to(device))
        self.fitted_loc.copy_(loc.to(device))
        self.fitted_scale.copy_(scale.to(device))
        self.fitted.fill_(True)

    def _fitted_parameters(self) -> dict[str, Tensor]:
        if not bool(self.fitted):
            raise RuntimeError(
                "the standard-normal prior has no clusters until a mixture is fitted to the "
                "codes: call fit_to_codes(codes, seed) (VarClust.fit does it every epoch)"
            )
        return {
            "log_weights": self.fitted_weights.clamp_min(1e-30).log(),
            "loc": self.fitted_loc,
            "scale": self.fitted_scale,
        }

    def log_joint(self, z: Tensor) -> Tensor:
        """log p(c = k, z) under the fitted mixture: z (..., D) -> (..., K)."""
        params = self._fitted_parameters()
        clusters = torch.arange(self.num_clusters, device=z.device)
        return diagonal_normal_component(params, clusters).log_prob(z.unsqueeze(-2)) + params[
            "log_weights"
        ]

    def sample_component(self, k: int, num_samples: int) -> Tensor:
        """Draw z from the fitted mixture's component k: (num_samples, D)."""
        if not 0 <= k < self.num_clusters:
            raise ValueError(f"cluster must be in [0, {self.num_clusters - 1}], got {k}")
        params = self._fitted_parameters()
        return dist.Normal(params["loc"][k], params["scale"][k]).sample((num_samples,))
