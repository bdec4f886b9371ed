"""The relaxed guide: the Variational Clustering reparameterisation (Prasad, Das & Bhowmick,
IJCNN 2020).

A relaxed one-hot cluster w ~ RelaxedOneHotCategorical(T, logits(x)) (Gumbel-softmax, Jang et
al. 2017) weights K per-cluster Gaussian codes z_k ~ Normal(loc_k(x), scale_k(x)):
z = sum_k w_k z_k. One pathwise sample then carries gradient to both the discrete and the
continuous part. Given w, z is Gaussian: Normal(sum_k w_k loc_k, sqrt(sum_k w_k^2 scale_k^2)),
which is how it is drawn.

**The bound.** q(z | x) = E_{q(w|x)} q(z | x, w) has no closed-form density, so the guide uses
the auxiliary-variable bound (Agakov & Barber 2004; Salimans et al. 2015; Ranganath et al.
2016) with the reverse model r(w | x, z) = q(w | x):

    log p(x) >= E_{q(w|x) q(z|x,w)} [ log p(x, z) + log r(w|x,z) - log q(w|x) - log q(z|x,w) ]
              = E_{q(w|x) q(z|x,w)} [ log p(x, z) - log q(z|x,w) ],

valid for any r, and the w terms cancel for this one. In Pyro: ``cluster_weights`` is a guide
site marked auxiliary and masked out of the ELBO (its log density is the cancelled term), ``z``
is scored by log q(z | x, w); the model is unchanged, its cluster summed out by enumeration.
The temperature T follows T_e = max(T_min, T_0 * decay^e) over epochs e (:meth:`start_epoch`,
called by ``VarClust.fit`` before each epoch); it is a buffer, so checkpoints keep it.

Cluster assignments: the model's p(c | z) at z = sum_k softmax(logits)_k loc_k(x), since with
this r nothing ties guide slot k to prior component k.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import Tensor, nn
from torch.nn.functional import one_hot

from .cluster_heads import PerClusterGuide

__all__ = ["RelaxedGuide", "annealed_temperature"]


def annealed_temperature(epoch: int, start: float, decay: float, minimum: float) -> float:
    """T_e = max(minimum, start * decay ** epoch)."""
    return max(minimum, start * decay**epoch)


class RelaxedGuide(PerClusterGuide):
    """Gumbel-softmax weights over per-cluster Gaussian codes (module docstring).

    Args:
        encoder: x (B, ...) -> (loc, scale), each (B, D).
        num_clusters: K; latent_dim: D.
        temperature: T_0 > 0; temperature_decay: per-epoch factor in (0, 1];
        temperature_min: the floor, in (0, T_0].
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_clusters: int,
        latent_dim: int,
        temperature: float = 1.0,
        temperature_decay: float = 0.93,
        temperature_min: float = 0.5,
    ) -> None:
        if not 0 < temperature_min <= temperature:
            raise ValueError(
                f"need 0 < temperature_min <= temperature, got {temperature_min} and {temperature}"
            )
        if not 0 < temperature_decay <= 1:
            raise ValueError(f"temperature_decay must be in (0, 1], got {temperature_decay}")
        super().__init__(encoder, num_clusters, latent_dim)
        self.schedule = (temperature, temperature_decay, temperature_min)
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def start_epoch(self, epoch: int) -> None:
        """Set T for epoch ``epoch`` (0-based) from the schedule."""
        self.temperature.fill_(annealed_temperature(epoch, *self.schedule))

    def local(self, x: Tensor, cluster: Tensor | None, cluster_mask: Tensor | None) -> None:
        logits, locs, scales = self.heads(*self.encoder(x))
        relaxed = dist.RelaxedOneHotCategorical(self.temperature, logits=logits)
        with poutine.mask(mask=False):  # log r(w|x,z) - log q(w|x) = 0: out of the ELBO
            w = pyro.sample("cluster_weights", relaxed, infer={"is_auxiliary": True})
        if cluster_mask is not None:  # labelled data use their cluster's code
            labelled = one_hot(cluster, logits.shape[-1]).to(w.dtype)
            w = torch.where(cluster_mask.unsqueeze(-1), labelled, w)
        self.code_distribution(w, locs, scales)

    @staticmethod
    def code_distribution(w: Tensor, locs: Tensor, scales: Tensor) -> Tensor:
        """Sample z ~ q(z | x, w) = Normal(sum_k w_k loc_k, sqrt(sum_k w_k^2 scale_k^2))."""
        loc = (w.unsqueeze(-1) * locs).sum(-2)
        scale = ((w.unsqueeze(-1) * scales) ** 2).sum(-2).sqrt()
        return pyro.sample("z", dist.Normal(loc, scale).to_event(1))
