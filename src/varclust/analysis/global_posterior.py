"""A fit's posterior over its global parameters, where it has one, and draws from it.

A Bayesian prior (``bayes-gmm`` with ``global_guide="mean-field"``, ``dp``) owns a Pyro guide
over its global sites (``prior.globals_guide()``: the weights or the DP's sticks, the components'
``loc`` and ``scale``, the DP's ``dp_concentration`` when learned): a mean-field variational
posterior q(g). A point-estimate fit has none: the ``gmm`` and ``normal`` priors have learned
parameters, not sites, and ``bayes-gmm``'s default MAP guide is point masses (``Delta``).

:func:`global_posterior` tells the two apart by tracing the guide; :func:`draw_globals` draws
g_1..g_R ~ q with Pyro's ``Predictive`` (the guide run as a program in a vectorised plate), and
:func:`mixture_at_draws` turns the draws into the mixture the model uses at each of them, by
running the prior's own ``sample_parameters`` conditioned on them.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Predictive
from pyro.nn import PyroModule
from torch import Tensor

__all__ = ["draw_globals", "global_posterior", "mixture_at_draws"]


@torch.no_grad()
def global_posterior(prior: PyroModule) -> PyroModule | None:
    """The prior's guide over its global sites when it is a distribution, else None (no global
    guide, or one whose every site is a point mass, as a MAP guide's are)."""
    guide = prior.globals_guide()  # a MixturePrior hook: None for point-estimated globals
    if guide is None:
        return None
    cuda = sorted({p.device for p in guide.parameters() if p.device.type == "cuda"}, key=str)
    with torch.random.fork_rng(devices=cuda):  # a look at the sites' kinds: the RNG untouched
        trace = poutine.trace(guide).get_trace()
    sites = [site for site in trace.nodes.values() if site["type"] == "sample"]
    if all(isinstance(site["fn"], dist.Delta) for site in sites):
        return None
    return guide


@torch.no_grad()
def draw_globals(global_guide: PyroModule, num_draws: int) -> dict[str, Tensor]:
    """R = ``num_draws`` independent draws g_r ~ q(g) of every global site of the guide:
    site name -> (R, *site shape). Uses the torch RNG (seed it for repeatable draws)."""
    samples = Predictive(global_guide, num_samples=num_draws, parallel=True)()
    return {name: value.detach() for name, value in samples.items()}


@torch.no_grad()
def mixture_at_draws(prior: PyroModule, global_values: dict[str, Tensor]) -> dict[str, Tensor]:
    """The mixture at each draw: ``weights`` (R, K), ``loc`` and ``scale`` (R, K, D) (for a
    full-covariance prior the marginal standard deviations, and its ``scale_tril`` (R, K, D, D),
    the covariances' Cholesky factors), from the prior's ``sample_parameters()`` run in a plate
    of the R draws with its global sites conditioned on ``global_values`` (site name ->
    (R, ...))."""
    num_draws = len(next(iter(global_values.values())))
    with pyro.plate("draws", num_draws, dim=-1), poutine.condition(data=global_values):
        params = prior.sample_parameters()
    mixture = {"weights": params["log_weights"].log_softmax(-1).exp(), "loc": params["loc"],
               "scale": params["scale"]}
    if "scale_tril" in params:
        mixture["scale_tril"] = params["scale_tril"]
    return mixture
