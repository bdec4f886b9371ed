"""Expectation-maximisation training (ClusterDDPM's split of the fit).

Each EM iteration is

* an **M-step**: the mixture prior frozen, ``m_step_epochs`` epochs of SVI on encoder and
  generator with the same model/guide pair and ``TraceEnum_ELBO`` as the SVI path. With the prior
  fixed, the loss per datum is

      -E_q[log p(x | z)] - E_q[log sum_k pi_k N(z | mu_k, sigma_k)] + E_q[log q(z | x)],

  the generator's reconstruction term plus the KL between q(z | x) and the mixture; its gradient
  in z is the responsibility-weighted sum of the per-component gradients
  (d/dz log sum_k pi_k N_k(z) = sum_k p(k | z) d/dz log N_k(z)), i.e. the responsibility-weighted
  KL of VaDE/ClusterDDPM.
* an **E-step**: the networks frozen, the whole data set encoded (posterior means and, with
  ``use_code_var``, variances, in batches on the training device) and the mixture refitted to
  the codes by closed-form EM
  (:func:`varclust.inference.gmm.diagonal_mixture_em`), warm-started from the current prior and
  written into it in place.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from pyro.nn import PyroModule
from torch import Tensor, nn

from .batching import batched_apply
from .gmm import DiagonalMixture, diagonal_mixture_em
from .svi import SVITrainer

__all__ = ["e_step", "fit_em", "frozen"]


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Within the block the module's parameters get no gradients (so no optimiser moves them);
    their previous ``requires_grad`` flags are restored afterwards."""
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


@torch.no_grad()
def e_step(
    prior: PyroModule,
    codes: Tensor,
    iterations: int,
    reg_covar: float = 1e-6,
    min_weight: float = 1e-4,
    code_var: Tensor | None = None,
) -> list[float]:
    """Refit the prior's mixture to codes (N, D) by ``iterations`` closed-form EM steps, starting
    from the prior's current values, and write the result into the prior in place
    (``code_var``: see :func:`~varclust.inference.gmm.diagonal_mixture_em`).

    Returns the codes' mean log-likelihood per datum before and after every step.
    """
    init = DiagonalMixture(prior.weights.detach(), prior.loc.detach(), prior.scale.detach())
    mixture, history = diagonal_mixture_em(codes, init, iterations, reg_covar, min_weight,
                                           code_var)
    prior.set_mixture(mixture.weights, mixture.loc, mixture.scale)
    return history


def fit_em(
    model: PyroModule,
    guide: PyroModule,
    data: Tensor,
    trainer: SVITrainer,
    *,
    iterations: int,
    m_step_epochs: int,
    e_step_iterations: int,
    batch_size: int,
    seed: int,
    start_iteration: int = 0,
    reg_covar: float = 1e-6,
    min_weight: float = 1e-4,
    use_code_var: bool = False,
    on_m_step: Callable[[int, Tensor], None] | None = None,
    on_iteration: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Alternate M-steps and E-steps from ``start_iteration`` to ``iterations``.

    Args:
        model, guide: the Pyro model (with a ``prior`` attribute holding the
            :class:`~varclust.model.priors.GaussianMixturePrior`) and guide (with ``encode``).
        data: (N, ...) on the training device.
        trainer: the SVI trainer of model and guide (its optimiser state carries across
            M-steps). The prior is frozen while it runs.
        use_code_var: the E-step's variance update adds q(z | x)'s variances to the squared
            codes (VaDE's closed form); False fits the posterior means only.
        on_m_step: called after every gradient step with (step index, loss).
        on_iteration: called with each iteration's record (after its E-step), e.g. to score,
            log and checkpoint.
    Returns:
        one record per iteration run: ``iteration``, ``elbo`` (mean per datum over the last
        M-step epoch), ``loglik`` (the codes' mean mixture log-likelihood after the E-step),
        ``loglik_before``, seconds of each step.
    """
    if m_step_epochs < 0 or e_step_iterations < 1:
        raise ValueError("EM needs m_step_epochs >= 0 and e_step_iterations >= 1, got "
                         f"{m_step_epochs} and {e_step_iterations}")
    records = []
    for iteration in range(start_iteration, iterations):
        t0 = time.perf_counter()
        model.train()
        guide.train()
        elbo = float("nan")
        with frozen(model.prior):
            for epoch in range(m_step_epochs):
                elbo = trainer.epoch(data, batch_size, seed, iteration * m_step_epochs + epoch,
                                     on_m_step)
        t1 = time.perf_counter()
        model.eval()
        guide.eval()
        stats = batched_apply(lambda b: torch.cat(guide.encode(b), -1), data)
        codes, code_scale = stats.chunk(2, -1)
        loglik = e_step(model.prior, codes, e_step_iterations, reg_covar, min_weight,
                        code_scale**2 if use_code_var else None)
        t2 = time.perf_counter()
        record = {
            "epoch": iteration + 1,
            "iteration": iteration + 1,
            "elbo": elbo,
            "loglik_before": loglik[0],
            "loglik": loglik[-1],
            "m_step_seconds": t1 - t0,
            "e_step_seconds": t2 - t1,
            "seconds": t2 - t0,
        }
        records.append(record)
        if on_iteration is not None:
            on_iteration(record)
    return records
