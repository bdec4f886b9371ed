"""Fit a Bayesian prior's global posterior alone, on fixed codes (no networks).

Checks a prior against closed-form references (scikit-learn's ``BayesianGaussianMixture`` on the
same codes) and lets a user ask what a prior makes of codes already in hand.
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from torch import Tensor

from .priors import MixturePrior

__all__ = ["fit_prior_to_codes"]


def fit_prior_to_codes(
    prior: MixturePrior, codes: Tensor, steps: int = 2000, learning_rate: float = 0.05,
    batch_size: int | None = None, seed: int = 0, final_lr_fraction: float = 0.1,
) -> list[float]:
    """SVI on the prior's global guide with the codes (N, D) observed as ``z``.

    The model is the prior's own: ``sample_parameters()`` outside a ``data`` plate of size N,
    then the enumerated cluster and ``z`` = the codes inside it (mini-batches of ``batch_size``
    drawn with ``seed``, default the whole set). The guide is ``prior.global_guide``; Adam over
    the prior's parameters, its learning rate decayed exponentially to ``final_lr_fraction`` of
    ``learning_rate`` by the last step (the Monte Carlo noise of the sticks' gradients
    otherwise keeps the Beta posteriors far from their optimum). Returns the loss (-ELBO per
    datum) of every step.
    """
    global_guide = prior.global_guide
    num_data = len(codes)
    batch = num_data if batch_size is None else min(batch_size, num_data)
    generator = torch.Generator().manual_seed(seed)
    pyro.set_rng_seed(seed)

    def model(indices: Tensor) -> None:
        params = prior.sample_parameters()
        with pyro.plate("data", num_data, subsample=indices):
            poutine.condition(prior, data={"z": codes[indices]})(params)

    def guide(indices: Tensor) -> None:
        global_guide()

    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    optimiser = torch.optim.Adam(prior.parameters(), lr=learning_rate)
    decay = torch.optim.lr_scheduler.ExponentialLR(
        optimiser, gamma=final_lr_fraction ** (1 / max(1, steps)))
    losses = []
    for _ in range(steps):
        indices = torch.randperm(num_data, generator=generator)[:batch]
        optimiser.zero_grad()
        loss = elbo.differentiable_loss(model, guide, indices)
        loss.backward()
        optimiser.step()
        decay.step()
        losses.append(loss.item() / num_data)
    return losses
