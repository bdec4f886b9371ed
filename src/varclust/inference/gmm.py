"""The E-step of the EM loop: a diagonal Gaussian mixture refitted to codes in closed form.

Each iteration is one classical EM step on the codes (N, D), written in torch so it runs on the
training device:

    r_nk   = pi_k N(z_n | mu_k, sigma_k^2) / sum_j pi_j N(z_n | mu_j, sigma_j^2)
    N_k    = sum_n r_nk + 10 eps
    pi_k   = N_k / N
    mu_k   = sum_n r_nk z_n / N_k
    sigma_k^2 = sum_n r_nk z_n^2 / N_k - mu_k^2 + reg_covar

which is scikit-learn's ``GaussianMixture(covariance_type="diag")`` update (same ``reg_covar``
and the same 10 eps guard on N_k), so both give the same parameters from the same start.
The sums run in float64. A component whose weight falls below ``min_weight`` keeps its mean
and scale and gets that weight (the others share the rest), with a logged warning, so no
component dies silently.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["DiagonalMixture", "diagonal_mixture_em", "mixture_log_likelihood"]

log = logging.getLogger("varclust")

_EPS64 = torch.finfo(torch.float64).eps


@dataclass
class DiagonalMixture:
    """weights (K,), loc (K, D), scale (K, D): standard deviations, not variances."""

    weights: Tensor
    loc: Tensor
    scale: Tensor


def _log_joint(codes: Tensor, mixture: DiagonalMixture) -> Tensor:
    """log pi_k + log N(z_n | mu_k, sigma_k^2): codes (N, D) -> (N, K)."""
    var = mixture.scale**2
    diff = codes[:, None, :] - mixture.loc[None]
    log_comp = -0.5 * ((diff**2 / var[None]).sum(-1) + var.log().sum(-1)[None]
                       + codes.shape[-1] * math.log(2 * math.pi))
    return log_comp + mixture.weights.log()[None]


def mixture_log_likelihood(codes: Tensor, mixture: DiagonalMixture) -> float:
    """Mean log-density of the codes (N, D) under the mixture, per datum (float64 sums)."""
    m = DiagonalMixture(*(t.to(torch.float64) for t in (mixture.weights, mixture.loc,
                                                         mixture.scale)))
    return float(_log_joint(codes.to(torch.float64), m).logsumexp(-1).mean())


def diagonal_mixture_em(
    codes: Tensor,
    init: DiagonalMixture,
    iterations: int,
    reg_covar: float = 1e-6,
    min_weight: float = 1e-4,
    code_var: Tensor | None = None,
) -> tuple[DiagonalMixture, list[float]]:
    """Run ``iterations`` EM steps of a diagonal Gaussian mixture on ``codes``, from ``init``.

    Args:
        codes: (N, D) on any device.
        init: the starting mixture (the current prior, so the E-step is warm-started).
        iterations: EM steps (>= 1).
        reg_covar: added to every variance after each M-step (scikit-learn's ``reg_covar``).
        min_weight: the floor for a component's weight; a component whose weight would fall
            below it is kept alive at this weight and a warning is logged.
        code_var: (N, D) optional variances of the codes (q(z | x)'s scale squared): the
            variance update then uses E_q[z^2] = codes^2 + code_var (VaDE's update of the
            mixture from q); None treats the codes as exact points (scikit-learn's update).
    Returns:
        the new mixture (float32, on the codes' device) and the mean log-likelihood per datum
        before the first step and after every step (``iterations + 1`` values).
    """
    if iterations < 1:
        raise ValueError(f"the E-step needs at least 1 iteration, got {iterations}")
    if codes.dim() != 2:
        raise ValueError(f"codes must have shape (N, D), got {tuple(codes.shape)}")
    num_clusters = init.weights.shape[0]
    if not 0 <= min_weight < 1.0 / num_clusters:
        raise ValueError(f"min_weight must be in [0, 1/K) = [0, {1 / num_clusters:.4g}), "
                         f"got {min_weight}")
    x = codes.detach().to(torch.float64)
    n = x.shape[0]
    m = DiagonalMixture(*(t.detach().to(device=x.device, dtype=torch.float64)
                          for t in (init.weights, init.loc, init.scale)))
    x2 = x**2 if code_var is None else x**2 + code_var.detach().to(x)
    history = []
    dying: set[int] = set()
    for _ in range(iterations):
        log_joint = _log_joint(x, m)
        log_norm = log_joint.logsumexp(-1, keepdim=True)
        history.append(float(log_norm.mean()))
        resp = (log_joint - log_norm).exp()  # (N, K)
        nk = resp.sum(0) + 10 * _EPS64
        loc = resp.T @ x / nk[:, None]
        var = resp.T @ x2 / nk[:, None] - loc**2 + reg_covar
        weights = nk / n
        scale = var.clamp_min(reg_covar if reg_covar > 0 else 1e-12).sqrt()
        low = weights < min_weight
        if bool(low.any()):
            # too few codes to estimate it: keep its mean and scale, give it the floor weight
            dying.update(low.nonzero().flatten().tolist())
            weights = torch.where(low, torch.full_like(weights, min_weight),
                                  weights * (1 - min_weight * low.sum()) / weights[~low].sum())
            loc = torch.where(low[:, None], m.loc, loc)
            scale = torch.where(low[:, None], m.scale, scale)
        m = DiagonalMixture(weights, loc, scale)
    history.append(mixture_log_likelihood(x, m))
    if dying:
        log.warning("E-step: component(s) %s would have got a weight below %.2g; floored at "
                    "it so they stay alive (fewer clusters, or a longer pretraining, may fit "
                    "the data better)", sorted(dying), min_weight)
    out = DiagonalMixture(*(t.to(device=codes.device, dtype=torch.float32)
                            for t in (m.weights, m.loc, m.scale)))
    return out, history
