"""Expectation-maximisation training (ClusterDDPM's split of the fit).

Each EM iteration is

* an **M-step**: the mixture prior frozen, ``m_step_epochs`` epochs of SVI on encoder and
  generator with the same model/guide pair and ``TraceEnum_ELBO`` as the SVI path (labels of a
  semi-supervised fit included). With the prior fixed, the loss per datum is

      -E_q[log p(x | z)] - E_q[log sum_k pi_k N(z | mu_k, sigma_k)] + E_q[log q(z | x)],

  the generator's reconstruction term plus the KL between q(z | x) and the mixture; its gradient
  in z is the responsibility-weighted sum of the per-component gradients
  (d/dz log sum_k pi_k N_k(z) = sum_k p(k | z) d/dz log N_k(z)), i.e. the responsibility-weighted
  KL of VaDE/ClusterDDPM. A KL warm-up (``kl_weight``) scales every latent site's term (the
  prior and q's entropy, everything but the data site ``x``) by beta <= 1.
* an **E-step**: the networks frozen, the whole data set encoded (q(z | x)'s means and scales,
  in batches on the training device) and the prior's mixture refitted to them, warm-started from
  the current prior and written into it in place. The E-steps (:data:`E_STEPS`):

  - ``clusterddpm``: as ClusterDDPM's code runs it: one code per datum drawn from q,
    z = m + s * eps, and scikit-learn's diagonal ``GaussianMixture`` refitted to them to
    convergence, started from the current mixture (``weights_init``, ``means_init``,
    ``precisions_init``). The sampled codes keep the mixture at least as wide as q.
  - ``vade``: coordinate ascent on VaDE's bound in closed form, with q's variances in the
    responsibilities and in the variance update (:func:`~varclust.model.gmm.diagonal_mixture_em`
    with ``code_var``); its objective never decreases.
  - ``means``: the closed form on the means alone (q's variances ignored); the mixture then
    shrinks to the codes' spread each iteration and the loop tends to contract. Kept for runs
    made before the other two existed.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from pyro.nn import PyroModule
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from torch import Tensor, nn

from ..model.gmm import (
    DiagonalMixture,
    check_min_weight,
    diagonal_mixture_em,
    floor_weights,
    mixture_log_likelihood,
    point_mixture,
    warn_floored,
)
from ..modes import evaluating
from .kl_warmup import KLScale, kl_warmup
from .prediction import encode_codes
from .svi import SVITrainer

__all__ = [
    "ClusterDDPMEStep",
    "EStep",
    "E_STEPS",
    "KLScale",
    "MeansEStep",
    "VaDEEStep",
    "e_step",
    "fit_em",
    "frozen",
    "kl_warmup",
    "make_e_step",
    "prior_mixture",
]


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


def prior_mixture(prior: nn.Module) -> DiagonalMixture:
    """The prior's current mixture from its ``point_parameters()``: weights (K,), loc (K, D),
    scale (K, D). ValueError, naming the fix, for a prior without a mixture to refit."""
    return point_mixture(prior, "method='em' (its E-step refits it)",
                         "use method='svi' with this prior, or prior='gmm' with method='em'")


def write_mixture(prior: nn.Module, mixture: DiagonalMixture) -> None:
    """``prior.set_mixture`` with the E-step's mixture, then a check that the prior holds it
    (its weights and means as :func:`prior_mixture` reads them back): ValueError, naming the
    fix, for a prior whose ``set_mixture`` does not write what EM refits."""
    prior.set_mixture(mixture.weights, mixture.loc, mixture.scale)
    held = prior_mixture(prior)
    if not (torch.allclose(held.loc, mixture.loc.to(held.loc), atol=1e-4)
            and torch.allclose(held.weights, (mixture.weights / mixture.weights.sum())
                               .to(held.weights), atol=1e-4)):
        raise ValueError(
            f"{type(prior).__name__}.set_mixture did not store the mixture the E-step refitted "
            "(point_parameters() reads back other weights or means): implement "
            "set_mixture(weights, loc, scale) to write all three, or use method='svi'")


class EStep:
    """An E-step: the prior's mixture refitted to the encoded data, warm-started.

    Subclasses define :meth:`refit`; ``name`` is the config's ``e_step`` value.
    """

    name = ""

    def __init__(self, iterations: int = 10, reg_covar: float = 1e-6, min_weight: float = 1e-4
                 ) -> None:
        if iterations < 1:
            raise ValueError(f"the E-step needs at least 1 iteration, got {iterations}")
        if reg_covar < 0:
            raise ValueError(f"reg_covar must be >= 0, got {reg_covar}")
        self.iterations, self.reg_covar, self.min_weight = iterations, reg_covar, min_weight

    def refit(self, init: DiagonalMixture, loc: Tensor, scale: Tensor, seed: int
              ) -> tuple[DiagonalMixture, list[float], dict[str, Any]]:
        """Refit from ``init`` to q(z | x)'s means ``loc`` (N, D) and scales ``scale`` (N, D).

        Returns the mixture (float32, on loc's device), the objective per datum before and
        after (at least two values) and extra facts for the iteration's record.
        """
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, prior: nn.Module, loc: Tensor, scale: Tensor, seed: int
                 ) -> tuple[list[float], dict[str, Any]]:
        """Refit the prior's mixture and write it into the prior in place; returns the objective
        history and the record's extra facts."""
        check_min_weight(self.min_weight, prior.num_clusters)
        mixture, history, extra = self.refit(prior_mixture(prior), loc, scale, seed)
        write_mixture(prior, mixture)
        return history, extra


class MeansEStep(EStep):
    """Closed-form EM on q's means only (scikit-learn's update on points)."""

    name = "means"

    def refit(self, init, loc, scale, seed):
        mixture, history = diagonal_mixture_em(loc, init, self.iterations, self.reg_covar,
                                               self.min_weight)
        return mixture, history, {}


class VaDEEStep(EStep):
    """Closed-form coordinate ascent on VaDE's bound with q's variances (non-decreasing)."""

    name = "vade"

    def refit(self, init, loc, scale, seed):
        mixture, history = diagonal_mixture_em(loc, init, self.iterations, self.reg_covar,
                                               self.min_weight, code_var=scale**2)
        return mixture, history, {}


class ClusterDDPMEStep(EStep):
    """ClusterDDPM's E-step: scikit-learn's diagonal ``GaussianMixture`` refitted to convergence
    (``tol``, at most ``max_iter`` iterations; scikit-learn's defaults 1e-3 and 100, as
    ClusterDDPM) on one code per datum sampled from q, z = m + s * eps (eps from ``seed``),
    warm-started from the current mixture. ``iterations`` is unused. The objective is the
    sampled codes' mean log-likelihood (scikit-learn's ``score``)."""

    name = "clusterddpm"

    def __init__(self, iterations: int = 10, reg_covar: float = 1e-6, min_weight: float = 1e-4,
                 max_iter: int = 100, tol: float = 1e-3) -> None:
        super().__init__(iterations, reg_covar, min_weight)
        self.max_iter, self.tol = max_iter, tol

    @staticmethod
    def sample_codes(loc: Tensor, scale: Tensor, seed: int) -> Tensor:
        """z = loc + scale * eps (N, D), eps ~ N(0, I) drawn on the CPU from ``seed``."""
        eps = torch.randn(loc.shape, generator=torch.Generator().manual_seed(seed),
                          dtype=torch.float64)
        return loc.detach().double().cpu() + scale.detach().double().cpu() * eps

    def fit_sklearn(self, init: DiagonalMixture, codes: Tensor, seed: int) -> GaussianMixture:
        """The warm-started GaussianMixture, fitted to codes (N, D)."""
        w = init.weights.detach().double().cpu().numpy()
        gmm = GaussianMixture(
            len(w), covariance_type="diag", weights_init=w / w.sum(),
            means_init=init.loc.detach().double().cpu().numpy(),
            precisions_init=(1 / init.scale.detach().double().cpu() ** 2).numpy(),
            reg_covar=self.reg_covar, max_iter=self.max_iter, tol=self.tol,
            init_params="random_from_data", random_state=seed % 2**32,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # recorded as "converged"
            gmm.fit(codes.numpy())
        return gmm

    def refit(self, init, loc, scale, seed):
        codes = self.sample_codes(loc, scale, seed)
        before = mixture_log_likelihood(codes, init)
        gmm = self.fit_sklearn(init, codes, seed)
        fitted = DiagonalMixture(*(torch.from_numpy(np.asarray(a, dtype=np.float64)) for a in
                                   (gmm.weights_, gmm.means_, np.sqrt(gmm.covariances_))))
        mixture, floored = floor_weights(fitted, _to64(init), self.min_weight)
        warn_floored(set(floored), self.min_weight)
        out = DiagonalMixture(*(t.to(device=loc.device, dtype=torch.float32)
                                for t in (mixture.weights, mixture.loc, mixture.scale)))
        after = mixture_log_likelihood(codes, mixture)
        return out, [before, after], {"e_step_converged": bool(gmm.converged_),
                                      "e_step_iterations_run": int(gmm.n_iter_)}


def _to64(m: DiagonalMixture) -> DiagonalMixture:
    return DiagonalMixture(*(t.detach().double().cpu() for t in (m.weights, m.loc, m.scale)))


#: the E-steps by their config name
E_STEPS: dict[str, type[EStep]] = {
    cls.name: cls for cls in (ClusterDDPMEStep, VaDEEStep, MeansEStep)}


def make_e_step(name: str, iterations: int = 10, reg_covar: float = 1e-6,
                min_weight: float = 1e-4) -> EStep:
    """The E-step called ``name`` (a key of :data:`E_STEPS`)."""
    if name not in E_STEPS:
        raise ValueError(f"unknown E-step {name!r}; choose one of {sorted(E_STEPS)}")
    return E_STEPS[name](iterations, reg_covar, min_weight)


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
    (``code_var``: see :func:`~varclust.model.gmm.diagonal_mixture_em`).

    Returns the objective per datum before and after every step.
    """
    mixture, history = diagonal_mixture_em(codes, prior_mixture(prior), iterations, reg_covar,
                                           min_weight, code_var)
    write_mixture(prior, mixture)
    return history


def fit_em(
    model: PyroModule,
    guide: PyroModule,
    data: Tensor,
    trainer: SVITrainer,
    *,
    iterations: int,
    m_step_epochs: int,
    batch_size: int,
    seed: int,
    e_step: EStep | None = None,
    start_iteration: int = 0,
    supervision: dict[str, Tensor] | None = None,
    kl_weight: Callable[[int], float] | None = None,
    warm_up_terms: bool = False,
    on_epoch_start: Callable[[int], None] | None = None,
    on_m_step: Callable[[int, Tensor], None] | None = None,
    on_iteration: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Alternate M-steps and E-steps from ``start_iteration`` to ``iterations``.

    Args:
        model, guide: the Pyro model (with a ``prior`` holding a Gaussian mixture:
            ``point_parameters()`` with ``loc`` and ``scale``, and ``set_mixture``) and guide
            (with ``encode``).
        data: (N, ...) on the training device.
        trainer: the SVI trainer of model and guide (its optimiser state carries across
            M-steps). The prior is frozen while it runs.
        e_step: the E-step (default: :class:`VaDEEStep` with 10 iterations).
        supervision: semi-supervised ``cluster`` (N,) and ``cluster_mask`` (N,), passed to
            every M-step epoch.
        kl_weight: iteration -> beta in (0, 1], the M-step's KL warm-up (:class:`KLScale`);
            None: 1.
        warm_up_terms: scale the trainer's terms outside the ELBO by the same beta
            (``trainer.terms_weight``).
        on_epoch_start: called with the global M-step epoch index before each epoch (e.g. the
            relaxed guide's temperature schedule).
        on_m_step: called after every gradient step with (step index, loss).
        on_iteration: called with each iteration's record (after its E-step), e.g. to score,
            log and checkpoint.
    Returns:
        one record per iteration run: ``iteration``, ``elbo`` (mean per datum over the last
        M-step epoch), ``loglik`` (the E-step's objective after it), ``loglik_before``,
        ``kl_weight``, seconds of each step, and the E-step's own facts.
    """
    if m_step_epochs < 0:
        raise ValueError(f"EM needs m_step_epochs >= 0, got {m_step_epochs}")
    e_step = VaDEEStep() if e_step is None else e_step
    prior_mixture(model.prior)  # refuse a prior without a mixture before any training
    supervision = supervision or {}
    records = []
    for iteration in range(start_iteration, iterations):
        t0 = time.perf_counter()
        model.train()
        guide.train()
        elbo = float("nan")
        beta = 1.0 if kl_weight is None else float(kl_weight(iteration))
        trainer.terms_weight = beta if warm_up_terms else 1.0
        with frozen(model.prior), KLScale(beta):
            for epoch in range(m_step_epochs):
                index = iteration * m_step_epochs + epoch
                if on_epoch_start is not None:
                    on_epoch_start(index)
                elbo = trainer.epoch(data, batch_size, seed, index, on_m_step, **supervision)
        t1 = time.perf_counter()
        with evaluating(model, guide):
            loc, scale = encode_codes(guide, data)
        history, extra = e_step(model.prior, loc, scale, seed * 1_000_003 + iteration)
        t2 = time.perf_counter()
        record = {
            "epoch": iteration + 1,
            "iteration": iteration + 1,
            "elbo": elbo,
            "kl_weight": beta,
            "loglik_before": history[0],
            "loglik": history[-1],
            "m_step_seconds": t1 - t0,
            "e_step_seconds": t2 - t1,
            "seconds": t2 - t0,
            **extra,
        }
        records.append(record)
        if on_iteration is not None:
            on_iteration(record)
    return records
