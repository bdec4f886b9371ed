"""The relaxed guide and model: Variational Clustering's discrete + continuous latent
(Prasad, Das & Bhowmick, IJCNN 2020), written as a bound of a relaxed model.

**The relaxed model.** The cluster is a relaxed one-hot vector w on the simplex, in the model
as well as in the guide (Maddison, Mnih & Teh 2017; Jang, Gu & Poole 2017):

    w ~ Concrete(T_p, pi)                    (RelaxedOneHotCategorical with the mixture weights)
    z | w ~ Normal(sum_k w_k mu_k, sqrt(sum_k w_k^2 sigma_k^2))
                                             (z = sum_k w_k z_k with z_k ~ Normal(mu_k, sigma_k))
    x | z ~ p_theta(x | z)

At a corner w = e_k, z | w is component k; as T_p -> 0 the model tends to the Gaussian
mixture.

**The guide** mirrors it, a discrete and a continuous part with a reparameterisation of both:

    w ~ Concrete(T_q, logits(x))             (logits: q(c | x), the cluster read-out)
    z | x, w ~ Normal(sum_k w_k m_k(x), sqrt(sum_k w_k^2 s_k(x)^2))

one Gumbel draw and one Gaussian draw carry pathwise gradients to both parts.

**The bound.** Every density is tractable, so the ELBO of the relaxed model is the plain one:

    log p(x) >= E_{q(w|x) q(z|x,w)} [ log p(x|z) + log p(z|w) + log p(w)
                                       - log q(z|x,w) - log q(w|x) ]
              = E_q[ log p(x|z) ] - E_{q(w|x)}[ KL(q(z|x,w) || p(z|w)) ] - KL(q(w|x) || p(w)).

The second term compares the guide's code with the prior's code for the *same* w: guide slot k
is tied to prior component k, and spreading q(w|x) over clusters is not penalised by itself.
(A guide-only relaxation scored with the reverse model r(w|x,z) = q(w|x), what varclust had
before, gives ELBO(q(z|x)) - I_q(w; z|x): never above the marginal guide's, tied to no
component.)

**Why the two temperatures differ.** Write the guide's draw through Gumbel noise g:
y = log w with T_q y_k = l_k + g_k - const (l the guide's logits, a = log pi). The ExpConcrete
density (:mod:`varclust.model.relaxed_categorical`) then gives, for T_p = T_q,

    log q(y) - log p(y) = sum_k (l_k - a_k) + K logsumexp_k(a_k - l_k - g_k)
                          - K logsumexp_k(-g_k),

which does not depend on the temperature at all, and for a confident guide (l_k* exceeding
every other l_k by a gap G, pi uniform) is G + O(1): the relaxed KL grows linearly with the
guide's confidence instead of saturating at log K as the categorical KL does. With equal
temperatures the bound therefore pays one nat per nat of logit gap, and fits collapse onto one
cluster (UCI digits, pretrained start: ACC 0.14 +- 0.05 over 5 seeds, BENCHMARKS.md). The same
algebra with T_p != T_q gives a slope of T_p / T_q, so the model's p(w) is given its own, low,
fixed temperature ``prior_temperature`` (default 0.01; Maddison et al. also use separate
temperatures for prior and posterior): p(w) then sits almost on the corners, like the discrete
mixture, and confident assignments cost almost nothing.

Both w sites are sampled as y = log w under the ExpConcrete law: the Jacobian of y -> exp(y) is
the same under q and p, so log q(y) - log p(y) = log q(w) - log p(w) and the bound is unchanged,
while log w stays finite at low temperatures. The site is ``cluster_log_weights``, the same in
model and guide, and the ELBO is Pyro's ``TraceEnum_ELBO`` (nothing is enumerated).

**Temperatures.** The guide's T_q follows T_e = max(T_min, T_0 * decay^e) over epochs e
(:meth:`start_epoch`); it is a buffer of the guide, so checkpoints keep it. The model's T_p is
fixed (``prior_temperature``).

**Clusters** are read from q(c | x) = softmax(logits(x)) (:meth:`cluster_logits`); on a trained
fit it agrees with the model's p(c | z) (tested). Semi-supervised batches observe the label in
the model (``cluster_observed``) and set w = one_hot(label) in model and guide alike.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import Tensor, nn

from ..model.priors import labelled_weights
from ..model.relaxed_categorical import ExpRelaxedCategorical
from .cluster_heads import PerClusterGuide

__all__ = ["RelaxedGuide", "annealed_temperature"]


def annealed_temperature(epoch: int, start: float, decay: float, minimum: float) -> float:
    """T_e = max(minimum, start * decay ** epoch)."""
    return max(minimum, start * decay**epoch)


class RelaxedGuide(PerClusterGuide):
    """q(w | x) q(z | x, w) for the relaxed model (module docstring).

    Args:
        encoder: x (B, ...) -> (loc, scale), each (B, D).
        num_clusters: K; latent_dim: D.
        temperature: T_0 > 0; temperature_decay: per-epoch factor in (0, 1];
        temperature_min: the floor, in (0, T_0].
        prior_temperature: T_p > 0 of the model's p(w) = Concrete(T_p, weights), fixed.
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_clusters: int,
        latent_dim: int,
        temperature: float = 1.0,
        temperature_decay: float = 0.93,
        temperature_min: float = 0.5,
        prior_temperature: float = 0.01,
    ) -> None:
        if not 0 < temperature_min <= temperature:
            raise ValueError(
                f"need 0 < temperature_min <= temperature, got {temperature_min} and {temperature}"
            )
        if not 0 < temperature_decay <= 1:
            raise ValueError(f"temperature_decay must be in (0, 1], got {temperature_decay}")
        if not prior_temperature > 0:
            raise ValueError(f"prior_temperature must be > 0, got {prior_temperature}")
        super().__init__(encoder, num_clusters, latent_dim)
        self.prior_temperature = prior_temperature
        self.schedule = (temperature, temperature_decay, temperature_min)
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def bind_model(self, model: nn.Module) -> None:
        """Make ``model`` the relaxed model, p(w) = Concrete(prior_temperature, weights)."""
        model.relax_cluster(self.prior_temperature)

    def start_epoch(self, epoch: int) -> None:
        """Set T for epoch ``epoch`` (0-based) from the schedule."""
        self.temperature.fill_(annealed_temperature(epoch, *self.schedule))

    def epoch_summary(self) -> dict[str, float]:
        return {"temperature": float(self.temperature)}

    def local(self, x: Tensor, cluster: Tensor | None, cluster_mask: Tensor | None) -> None:
        logits, locs, scales = self.heads(*self.encoder(x))
        relaxed = ExpRelaxedCategorical(self.temperature, logits=logits)
        with poutine.mask(mask=True if cluster_mask is None else ~cluster_mask):
            w = pyro.sample("cluster_log_weights", relaxed).exp()
        if cluster_mask is not None:  # labelled data use their cluster's code, as the model
            w = labelled_weights(w, cluster, cluster_mask)
        self.code_distribution(w, locs, scales)

    @staticmethod
    def code_distribution(w: Tensor, locs: Tensor, scales: Tensor) -> Tensor:
        """Sample z ~ q(z | x, w) = Normal(sum_k w_k loc_k, sqrt(sum_k w_k^2 scale_k^2)):
        w (B, K), locs and scales (B, K, D) -> z (B, D)."""
        loc = (w.unsqueeze(-1) * locs).sum(-2)
        scale = ((w.unsqueeze(-1) * scales) ** 2).sum(-2).sqrt()
        return pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def cluster_logits(self, x: Tensor, prior: nn.Module) -> Tensor:
        """log q(c | x) = log_softmax(logits(x)): (B, K)."""
        logits, _, _ = self.heads(*self.encoder(x))
        return logits.log_softmax(-1)
