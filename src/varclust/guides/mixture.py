"""The mixture guide q(c | x) q(z | x, c): the cluster enumerated in the guide (GMVAE; the
pattern of Pyro's examples/vae/ss_vae_M2.py)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.ops.indexing import Vindex
from torch import Tensor, nn

from .base import code_posterior
from .cluster_heads import PerClusterGuide, prior_uses_fitted_mixture

__all__ = ["MixtureGuide"]


class MixtureGuide(PerClusterGuide):
    """q(c | x) = Categorical(logits(x)), q(z | x, c) = Normal(loc_c(x), scale_c(x)).

    ``TraceEnum_ELBO`` enumerates ``cluster`` in the guide: the ELBO is the exact sum over c of
    q(c | x) [log p(x, z_c, c) - log q(c | x) - log q(z_c | x, c)], one z_c drawn per cluster
    (the decoder runs on K x B codes). In semi-supervised batches the model splits ``cluster``
    into ``cluster_observed`` and ``cluster_unobserved``; this guide then enumerates
    ``cluster_unobserved`` (masked to the unlabelled data) and draws z from the labelled
    cluster where there is a label.

    Args: as :class:`PerClusterGuide`.
    """

    def local(self, x: Tensor, cluster: Tensor | None, cluster_mask: Tensor | None) -> None:
        logits, locs, scales = self.heads(*self.encoder(x))
        q_cluster = dist.Categorical(logits=logits)
        if cluster_mask is None:
            c = pyro.sample("cluster", q_cluster, infer={"enumerate": "parallel"})
        else:
            with poutine.mask(mask=~cluster_mask):
                free = pyro.sample(
                    "cluster_unobserved", q_cluster, infer={"enumerate": "parallel"}
                )
            c = torch.where(cluster_mask, cluster, free)
        rows = torch.arange(x.shape[0], device=x.device)
        loc = Vindex(locs)[rows, c, :]
        scale = Vindex(scales)[rows, c, :]
        pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def cluster_logits(self, x: Tensor, prior: nn.Module) -> Tensor:
        """log q(c | x), (B, K); for a prior fitted to the codes, that mixture's posterior."""
        if prior_uses_fitted_mixture(prior):
            return code_posterior(prior, self.encode(x)[0])
        logits, _, _ = self.heads(*self.encoder(x))
        return logits.log_softmax(-1)
