"""A truncated stick-breaking (Dirichlet-process) mixture prior that switches clusters off.

The model (Sethuraman's stick-breaking construction, truncated at K as Blei & Jordan 2006 do):

    alpha           fixed (``concentration``), or ~ Gamma(1, rate 1 / concentration) when
                    ``learn_concentration`` (an exponential with mean ``concentration``)
    v_k ~ Beta(1, alpha)                   k = 0..K-2   (the site ``sticks``, (K-1,); v_{K-1} = 1)
    pi_k = v_k prod_{j<k} (1 - v_j)        (K,) on the simplex: the stick left after k breaks
    loc_kd   ~ Normal(m_d, r_d^(1/2))                    (K, D)
    scale_kd = tau_kd^(-1/2),  tau_kd ~ Gamma(nu D / 2, rate nu r_d / 2)   (K, D): a Gamma on
               the precision, for nu = 1 the marginal of scikit-learn's diagonal Normal-Gamma
               prior (``scale_pseudo_count`` nu: its pseudo-data, nu D, at the same mean D / r_d)
    c_n ~ Categorical(pi),  z_n | c_n ~ Normal(loc[c_n], scale[c_n])     n = 1..N

m and r (D,) are the codes' mean and variance (empirical Bayes, as scikit-learn's
``mean_prior`` and ``covariance_prior`` are): :meth:`DirichletProcessPrior.set_mixture` reads
them from the mixture fitted to the pretrained codes (until then m = 0, the Normal's spread is
``loc_prior_scale`` and r = 1). The Gamma prior is what makes a small component pay: it is
worth D pseudo-data of variance r / D, so a component of a few data cannot shrink onto them; a
LogNormal on the scales (as ``bayes-gmm`` has) lets such satellites of a big cluster live
(measured: 4 to 5 clusters in use on 3-cluster codes with truncation 20, against 3 with the
Gamma). A larger nu holds every component's variance near r / D, the resolution at which the
prior sees clusters: at nu = 1 the pretrained digits codes keep 23 to 29 of 30 components in
use, as scikit-learn's DP mixture does on them; nu trades that for fewer, broader components
(BENCHMARKS.md, issue 17).

E[v_k] = 1 / (1 + alpha): small alpha spends the stick on few clusters, and the weights decay
geometrically in k, so a K larger than the data need is an upper bound, not a choice: the
components the data do not fill keep only their prior share of what is left of the stick.

Where each site is sampled. ``sticks`` (with ``dp_concentration`` when learned), ``loc`` and
``scale`` are global: the model samples them once per step in :meth:`sample_parameters`, outside
the ``data`` plate; ``cluster`` and ``z`` are sampled inside it (by :class:`MixturePrior`), the
cluster enumerated, so the ELBO sums it out exactly given the globals.

The variational posterior over the globals is mean-field and reparameterised
(:class:`StickBreakingGlobals`, owned by the prior as ``global_guide`` and run by the amortized
guide before its local sites): q(v_k) = Beta(a_k, b_k) (implicit reparameterisation, float64 so
that sticks near 0 or 1 do not round to exact 0 or 1), q(loc) = Normal, q(scale) = LogNormal,
and q(alpha) = LogNormal when alpha is learned.

The ELBO for a mini-batch B of N data, with one draw g = (alpha, v, loc, scale) ~ q:

    ELBO = (N / |B|) sum_{n in B} E_q(z_n|x_n)[ log p(x_n | z_n) + log sum_k pi_k(v) N(z_n; loc_k,
           scale_k) - log q(z_n | x_n) ]
           + log p(v | alpha) - log q(v) + log p(loc) - log q(loc) + log p(scale) - log q(scale)
           [+ log p(alpha) - log q(alpha)]

The global terms are an estimate of -KL(q(g) || p(g)), a quantity of the whole data set, not a
sum over data: they sit outside the plate, so ``pyro.plate(subsample=...)``'s scale N / |B|
multiplies only the local terms and leaves them alone, and the sum of the per-batch ELBOs over an
epoch counts the KL of the globals once per step, as it should (each step is an unbiased estimate
of the full-data ELBO). This is what makes the pruning work at any N: the cost of a component,
KL of its loc and scale from their priors, grows like log N_k while an unused component costs
nothing, and the sticks' posterior Beta(1 + N_k, alpha + N_{>k}) at the optimum (the coordinate
update of Blei & Jordan; scikit-learn's ``BayesianGaussianMixture``) gives an empty component
ordered before kept ones a weight of order 1 / N, and those after the last kept one together
about alpha / N_last.

Settling. The globals learn at the networks' learning rate in the joint fit, far too slowly to
switch clusters off in a few epochs; :meth:`DirichletProcessPrior.settle_on_codes` (called once
by the fit after :meth:`~DirichletProcessPrior.set_mixture`) first fits them alone to the
pretrained codes by SVI (:func:`~varclust.model.prior_fit.fit_prior_to_codes`), and
:meth:`DirichletProcessPrior.end_epoch` does the same for ``epoch_settle_steps`` steps on each
epoch's codes. With ``epoch_settle_on="draws"`` (the default) those codes are one draw
z_n ~ q(z | x_n) a datum, so the steps are Monte Carlo steps on the ELBO's terms in the globals
with the networks held: a coordinate step on the global posterior, as the variational DP
mixture's coordinate ascent takes one per sweep (Blei & Jordan 2006). ``"means"`` fits E[z | x]
instead, which ignores the spread of q(z | x): not a step on the ELBO. The settling before the
joint fit uses the means (q(z | x) is then set narrow beside the components). Without the epoch's
settling the weights lag the codes: components the codes have left keep their weight, so they
keep a share of new codes and the codes never leave them for good. Measured on the digits
(truncation 30, 5 seeds; BENCHMARKS.md, issue 17): 23 to 29 clusters in use without it, NMI
0.768; 16 to 18 with it (draws), NMI 0.804, the same ELBO; 9 to 11 on the means, NMI 0.831
against K = 10's 0.807, the ELBO 3.8 nats a datum lower. So ``"means"`` is the setting for
choosing K and ``"draws"`` for the model's bound.
On the whole of Fashion-MNIST (3 seeds) 29 stay in use with or without it, 27 to 28 on the
means: 70 000 codes support almost every component.

Point estimates (``point_parameters``, used by ``predict``): the posterior-mean weights
E[pi_k] = E[v_k] prod_{j<k} E[1 - v_j] (exact for independent sticks; scikit-learn's
``weights_``), the posterior mean of loc and the median of scale.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from pyro.util import get_rng_state, set_rng_state
from torch import Tensor

from .bayesian_prior import (
    GlobalGuidedMixture,
    add_component_posteriors,
    centre_component_posteriors,
    component_point_estimates,
    normalised_mixture,
    sample_component_posteriors,
)
from .prior_fit import fit_prior_to_codes
from .priors import assign_param

__all__ = ["DirichletProcessPrior", "StickBreakingGlobals", "stick_breaking_log_weights",
           "sticks_from_weights"]

#: sticks are kept this far inside (0, 1) when their logs are taken (float64)
STICK_EPS = 1e-12
#: the share of the data a component must hold to count as in use (the issue's measure)
IN_USE_SHARE = 0.01


def stick_breaking_log_weights(sticks: Tensor) -> Tensor:
    """log pi from sticks v (..., K-1) in (0, 1): log pi_k = log v_k + sum_{j<k} log(1 - v_j),
    the last stick being 1. Returns (..., K); exp sums to 1 along the last dimension."""
    v = sticks.clamp(STICK_EPS, 1 - STICK_EPS)
    log_rest = torch.log1p(-v).cumsum(-1)  # log prod_{j<=k} (1 - v_j)
    before = torch.cat([torch.zeros_like(log_rest[..., :1]), log_rest], -1)  # prod_{j<k}
    log_v = torch.cat([v.log(), torch.zeros_like(v[..., :1])], -1)
    return log_v + before


def mixture_moments(weights: Tensor, loc: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """The mean (D,) and variance (D,) of the mixture sum_k w_k Normal(loc_k, scale_k)."""
    mean = weights @ loc
    return mean, weights @ (scale**2 + loc**2) - mean**2


def sticks_from_weights(weights: Tensor) -> Tensor:
    """The sticks (K-1,) that give the weights (K,): v_k = pi_k / (1 - sum_{j<k} pi_j), kept
    in [1e-6, 1 - 1e-6]."""
    weights = weights / weights.sum()
    left = 1 - torch.cat([weights.new_zeros(1), weights.cumsum(0)[:-2]])
    return (weights[:-1] / left.clamp_min(1e-12)).clamp(1e-6, 1 - 1e-6)


class StickBreakingGlobals(PyroModule):
    """The mean-field guide of the DP prior's globals (module docstring): q(v_k) = Beta(a_k,
    b_k) (K-1,), q(loc) = Normal and q(scale) = LogNormal (K, D), and q(alpha) = LogNormal when
    ``learn_concentration``. Starts at the prior's sticks Beta(1, concentration)."""

    def __init__(self, num_clusters: int, latent_dim: int, concentration: float,
                 learn_concentration: bool, min_scale: float, init_pseudo_count: float) -> None:
        super().__init__()
        self.min_scale = min_scale
        self.init_pseudo_count = init_pseudo_count
        self.learn_concentration = learn_concentration
        sticks = num_clusters - 1
        self.stick_a = PyroParam(torch.ones(sticks), constraints.greater_than(1e-3))
        self.stick_b = PyroParam(torch.full((sticks,), float(concentration)),
                                 constraints.greater_than(1e-3))
        if learn_concentration:
            self.log_concentration_loc = PyroParam(torch.tensor(float(concentration)).log())
            self.log_concentration_scale = PyroParam(torch.tensor(0.1),
                                                     constraints.greater_than(1e-4))
        self.init_components(num_clusters, latent_dim)

    def init_components(self, num_clusters: int, latent_dim: int) -> None:
        """The components' posteriors: q(loc) = Normal, q(scale) = LogNormal, (K, D)."""
        add_component_posteriors(self, num_clusters, latent_dim)

    def sample_components(self) -> None:
        """The components' global sites (``loc``, ``scale``)."""
        sample_component_posteriors(self)

    def component_estimates(self) -> dict[str, Tensor]:
        """The components' point estimates: loc (K, D), scale (K, D)."""
        return component_point_estimates(self)

    def centre_components(self, loc: Tensor, scale: Tensor) -> None:
        """Centre the components' posteriors on loc (K, D) and scale (K, D)."""
        centre_component_posteriors(self, loc, scale)

    def forward(self) -> None:
        if self.learn_concentration:
            pyro.sample("dp_concentration", dist.LogNormal(
                self.log_concentration_loc.double(), self.log_concentration_scale.double()))
        pyro.sample("sticks", dist.Beta(self.stick_a.double(), self.stick_b.double()).to_event(1))
        self.sample_components()

    def mean_weights(self) -> Tensor:
        """E_q[pi] (K,) = E[v_k] prod_{j<k} E[1 - v_j]."""
        a, b = self.stick_a.double(), self.stick_b.double()
        return stick_breaking_log_weights(a / (a + b)).exp().to(self.stick_a.dtype)

    def point_estimates(self) -> dict[str, Tensor]:
        """weights (K,) = E[pi] under q and the components' estimates (loc, scale (K, D))."""
        return {"weights": self.mean_weights(), **self.component_estimates()}

    def concentration_mean(self) -> Tensor | None:
        """E_q[alpha] when alpha is learned, else None."""
        if not self.learn_concentration:
            return None
        return (self.log_concentration_loc + self.log_concentration_scale**2 / 2).exp()

    def set_point(self, weights: Tensor, loc: Tensor, scale: Tensor) -> None:
        """Centre the posteriors on a mixture; each stick gets ``init_pseudo_count`` in all."""
        sticks = sticks_from_weights(torch.as_tensor(weights, dtype=torch.float64))
        assign_param(self, "stick_a", (sticks * self.init_pseudo_count).clamp_min(2e-3))
        assign_param(self, "stick_b", ((1 - sticks) * self.init_pseudo_count).clamp_min(2e-3))
        self.centre_components(loc, scale)


class DirichletProcessPrior(GlobalGuidedMixture):
    """The truncated stick-breaking mixture prior (module docstring): K is the truncation.

    Args:
        num_clusters: K, the truncation (the most clusters the fit can use); latent_dim: D.
        concentration: alpha (> 0); with ``learn_concentration`` the mean of its Gamma(1, 1/alpha)
            hyperprior. Small alpha uses few clusters (E[v_k] = 1 / (1 + alpha)).
        learn_concentration: put the hyperprior on alpha and learn q(alpha).
        loc_prior_scale: spread of the Normal prior on the means until :meth:`set_mixture`
            (or :meth:`set_code_moments`) sets the priors from the codes.
        min_scale: floor on the component scales the model uses.
        init_pseudo_count: a + b of every stick's Beta posterior when centred on a mixture.
        scale_pseudo_count: nu, the strength of the Gamma prior on the precisions (module
            docstring); 1 is scikit-learn's.
        settle_steps: SVI steps of the globals alone on the pretrained codes
            (:meth:`settle_on_codes`); 0 skips them.
        epoch_settle_steps: SVI steps of the globals alone on the codes after every epoch
            (:meth:`end_epoch`); 0 skips them.
        epoch_settle_on: "draws" (one z ~ q(z | x) a datum: a Monte Carlo step on the ELBO)
            or "means" (E[z | x]: not a step on the ELBO; module docstring, "Settling").
    """

    prunes_clusters = True
    #: the mean-field guide of the globals (a subclass with other components brings its own)
    global_guide_type: type[StickBreakingGlobals] = StickBreakingGlobals

    def __init__(
        self,
        num_clusters: int,
        latent_dim: int,
        concentration: float = 1.0,
        learn_concentration: bool = False,
        loc_prior_scale: float = 10.0,
        min_scale: float = 1e-3,
        init_pseudo_count: float = 1000.0,
        settle_steps: int = 1000,
        scale_pseudo_count: float = 1.0,
        epoch_settle_steps: int = 200,
        epoch_settle_on: str = "draws",
    ) -> None:
        super().__init__(num_clusters, latent_dim)
        if not concentration > 0:
            raise ValueError(f"the DP concentration alpha must be positive, got {concentration}")
        if not scale_pseudo_count > 0:
            raise ValueError(f"the DP scale_pseudo_count must be positive, got "
                             f"{scale_pseudo_count}")
        self.scale_pseudo_count = float(scale_pseudo_count)
        self.min_scale = min_scale
        self.settle_steps = settle_steps
        if epoch_settle_on not in ("draws", "means"):
            raise ValueError(f"epoch_settle_on must be 'draws' or 'means', got "
                             f"{epoch_settle_on!r}")
        self.epoch_settle_steps = epoch_settle_steps
        self.epoch_settle_on = epoch_settle_on
        self.learn_concentration = learn_concentration
        self.register_buffer("concentration", torch.tensor(float(concentration),
                                                           dtype=torch.float64))
        self.register_buffer("loc_prior_loc", torch.zeros(latent_dim))
        self.register_buffer("loc_prior_scale", torch.full((latent_dim,), float(loc_prior_scale)))
        self.register_buffer("code_variance", torch.ones(latent_dim))
        self.global_guide = self.global_guide_type(num_clusters, latent_dim, concentration,
                                                   learn_concentration, min_scale,
                                                   init_pseudo_count)

    def sample_parameters(self) -> dict[str, Tensor]:
        """The global sites (module docstring): ``log_weights`` (K,), ``loc``, ``scale`` (K, D)."""
        alpha = self.concentration
        if self.learn_concentration:
            alpha = pyro.sample("dp_concentration", dist.Gamma(alpha.new_ones(()), 1 / alpha))
        ones = alpha.new_ones(self.num_clusters - 1)  # alpha[..., None]: alpha may be batched
        sticks = pyro.sample("sticks", dist.Beta(ones, alpha[..., None] * ones).to_event(1))
        shape = (self.num_clusters, self.latent_dim)
        loc = pyro.sample("loc", dist.Normal(self.loc_prior_loc, self.loc_prior_scale)
                          .expand(shape).to_event(2))
        return {"log_weights": stick_breaking_log_weights(sticks).to(loc.dtype), "loc": loc,
                **self.sample_spreads()}

    def sample_spreads(self) -> dict[str, Tensor]:
        """The components' spreads, sampled outside the data plate: ``scale`` (K, D) =
        tau^(-1/2), floored at ``min_scale``, with tau ~ Gamma(nu D / 2, rate nu r / 2)."""
        nu = self.scale_pseudo_count
        precision = dist.Gamma(nu * self.latent_dim / 2 * torch.ones_like(self.code_variance),
                               nu * self.code_variance / 2)
        scale = pyro.sample("scale", dist.TransformedDistribution(
            precision, [dist.transforms.PowerTransform(-0.5)])
            .expand((self.num_clusters, self.latent_dim)).to_event(2))
        return {"scale": scale.clamp_min(self.min_scale)}

    @torch.no_grad()
    def set_mixture(self, weights: Tensor, loc: Tensor, scale: Tensor) -> None:
        """Centre the global guide on a mixture: weights (K,), loc (K, D), scale (K, D),
        component k at k (see :meth:`component_order` for the order the sticks favour)."""
        weights, loc, scale = normalised_mixture(weights, loc, scale, self.min_scale)
        self.set_code_moments(*mixture_moments(weights, loc, scale))
        self.global_guide.set_point(weights, loc, scale)

    def component_order(self, weights: Tensor) -> Tensor:
        """Decreasing weight: the order the stick-breaking prior favours (E[pi_k] decreases
        in k)."""
        return weights.argsort(descending=True)

    @torch.no_grad()
    def set_code_moments(self, mean: Tensor, variance: Tensor) -> None:
        """Empirical Bayes, as scikit-learn's BayesianGaussianMixture: centre the priors on the
        codes' mean (D,) and variance (D,): loc ~ Normal(mean, sqrt(variance)), precision ~
        Gamma(D / 2, variance / 2)."""
        self.loc_prior_loc.copy_(mean)
        self.loc_prior_scale.copy_(variance.sqrt())
        self.code_variance.copy_(variance)

    def settle_on_codes(self, codes: Tensor, seed: int) -> None:
        """Fit the global posterior alone to the pretrained codes (N, D) before the joint fit
        (:func:`~varclust.model.prior_fit.fit_prior_to_codes`: ``settle_steps`` steps, Adam
        0.05 decayed to 0.005, mini-batches of up to 2048): switching clusters off takes
        hundreds of steps at a larger learning rate than the networks train with."""
        if self.settle_steps:
            fit_prior_to_codes(self, codes.detach(), steps=self.settle_steps,
                               learning_rate=0.05, batch_size=2048, seed=seed)

    def end_epoch(self, codes: Callable[[], tuple[Tensor, Tensor]], seed: int) -> None:
        """Settle the globals again, ``epoch_settle_steps`` steps on the epoch's codes, as
        :meth:`settle_on_codes` does before the joint fit, so that the weights follow the codes
        (module docstring, "Settling"). ``codes``: () -> (loc, scale) of q(z | x), each (N, D);
        the steps fit one draw z ~ q(z | x) a datum (``epoch_settle_on="draws"``) or the means
        (``"means"``). The random state of the training is kept: the steps draw from their own
        stream, seeded by ``seed``."""
        if not self.epoch_settle_steps:
            return
        device = self.code_variance.device  # a GPU's stream is reseeded too: kept as well
        training_stream = get_rng_state()  # torch's CPU stream, Python's and numpy's
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            try:
                pyro.set_rng_seed(seed)
                loc, scale = codes()
                z = (loc + scale * torch.randn_like(scale) if self.epoch_settle_on == "draws"
                     else loc)
                fit_prior_to_codes(self, z.detach(), steps=self.epoch_settle_steps,
                                   learning_rate=0.05, batch_size=2048, seed=seed)
            finally:
                set_rng_state(training_stream)

    def in_use_threshold(self) -> float:
        """1 %: a cluster is in use when its posterior-mean weight holds 1 % of the data."""
        return IN_USE_SHARE

    def epoch_summary(self) -> dict[str, float]:
        """``clusters_in_use`` (weights >= 1 %) and ``dp_concentration`` (E_q[alpha])."""
        return {**super().epoch_summary(), "dp_concentration": self.concentration_mean()}

    def concentration_mean(self) -> float:
        """alpha: its posterior mean when learned, else the fixed value."""
        mean = self.global_guide.concentration_mean()
        return float((self.concentration if mean is None else mean).detach())
