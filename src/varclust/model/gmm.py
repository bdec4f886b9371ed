"""The closed-form E-steps of the EM loop: a diagonal Gaussian mixture refitted to codes (and
:func:`widen_by_code_scales`, the same variance update for a mixture restarted mid-fit).

Written in torch so they run on the training device; the sums run in float64.

**Point codes** (``code_var`` None): classical EM on codes z (N, D),

    r_nk   = pi_k N(z_n | mu_k, sigma_k^2) / sum_j pi_j N(z_n | mu_j, sigma_j^2)
    N_k    = sum_n r_nk + 10 eps
    pi_k   = N_k / N
    mu_k   = sum_n r_nk z_n / N_k
    sigma_k^2 = sum_n r_nk z_n^2 / N_k - mu_k^2 + reg_covar

which is scikit-learn's ``GaussianMixture(covariance_type="diag")`` update (same ``reg_covar``
and the same 10 eps guard on N_k), so both give the same parameters from the same start. The
objective reported is the codes' mean log-likelihood.

**Codes with q's variances** (``code_var`` = s^2, VaDE's bound): q(z_n | x_n) = N(m_n, s_n^2),
q(c_n | x_n) = r_n. The part of the ELBO that depends on the mixture and on r is

    L(theta, r) = sum_n sum_k r_nk [log pi_k + E_q[log N(z_n | mu_k, sigma_k^2)] - log r_nk],
    E_q[log N(z_n | mu_k, sigma_k^2)] = log N(m_n | mu_k, sigma_k^2)
                                         - 1/2 sum_d s_nd^2 / sigma_kd^2.

Coordinate ascent on L: for fixed theta the maximising r is

    r_nk ∝ pi_k N(m_n | mu_k, sigma_k^2) exp(-1/2 sum_d s_nd^2 / sigma_kd^2)

and the maximum is F(theta) = mean_n log sum_k pi_k N(m_n | mu_k, sigma_k^2)
exp(-1/2 sum_d s_nd^2 / sigma_kd^2) (divided by N); for fixed r the maximising theta is
pi_k = N_k / N, mu_k = sum_n r_nk m_n / N_k, sigma_kd^2 = sum_n r_nk (m_nd^2 + s_nd^2) / N_k -
mu_kd^2. Then F(theta_{t+1}) >= L(theta_{t+1}, r_t) >= L(theta_t, r_t) = F(theta_t): F never
decreases, and F is what is reported. ``reg_covar`` enters as extra code variance: with
s_nd^2 + reg_covar in place of s_nd^2 the maximising variance is exactly the update above plus
reg_covar, so the step stays an exact coordinate ascent on the F it reports.

In both, a component whose weight falls below ``min_weight`` keeps its mean and scale and gets
that weight (the others share the rest), with a logged warning, so no component dies silently;
such a step is no longer an exact maximisation (the monotonicity holds for the steps without it).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "DiagonalMixture",
    "check_min_weight",
    "diagonal_mixture_em",
    "floor_weights",
    "mixture_log_likelihood",
    "point_mixture",
    "widen_by_code_scales",
]

log = logging.getLogger("varclust")

_EPS64 = torch.finfo(torch.float64).eps


@dataclass
class DiagonalMixture:
    """weights (K,), loc (K, D), scale (K, D): standard deviations, not variances."""

    weights: Tensor
    loc: Tensor
    scale: Tensor


def point_mixture(prior, needed_by: str, fix: str) -> DiagonalMixture:
    """A prior's Gaussian mixture from its ``point_parameters()``, detached: weights (K,)
    summing to 1, loc (K, D), scale (K, D). ValueError naming ``needed_by`` (what reads the
    mixture) and ``fix`` when the prior has no ``log_weights``, ``loc`` and ``scale``."""
    params = prior.point_parameters()
    missing = {"log_weights", "loc", "scale"} - params.keys()
    if missing:
        raise ValueError(
            f"{needed_by} needs the prior's Gaussian mixture, but {type(prior).__name__} has no "
            f"mixture parameters (point_parameters() gives {sorted(params)}, without "
            f"{sorted(missing)}); {fix}")
    return DiagonalMixture(params["log_weights"].detach().log_softmax(-1).exp(),
                           params["loc"].detach(), params["scale"].detach())


def _log_joint(codes: Tensor, mixture: DiagonalMixture, code_var: Tensor | None = None
               ) -> Tensor:
    """log pi_k + log N(m_n | mu_k, sigma_k^2) - 1/2 sum_d v_nd / sigma_kd^2: codes m (N, D),
    optional code variances v (N, D) -> (N, K) (the module docstring's per-component terms)."""
    var = mixture.scale**2
    diff = codes[:, None, :] - mixture.loc[None]
    quad = diff**2 if code_var is None else diff**2 + code_var[:, None, :]
    log_comp = -0.5 * ((quad / var[None]).sum(-1) + var.log().sum(-1)[None]
                       + codes.shape[-1] * math.log(2 * math.pi))
    return log_comp + mixture.weights.log()[None]


def widen_by_code_scales(
    weights: Tensor, loc: Tensor, scale: Tensor, code_loc: Tensor, code_scale: Tensor
) -> Tensor:
    """The scales of a mixture fitted to the means m_n of q(z | x_n) = N(m_n, s_n^2), widened
    by the s_n that fit ignored: the variance update of the module docstring's VaDE bound with
    the weights and means held,

        sigma_k^2 = sum_n r_nk [(m_n - mu_k)^2 + s_n^2] / sum_n r_nk
                  = (the mixture's variance) + sum_n r_nk s_n^2 / sum_n r_nk,

    r_nk the mixture's responsibilities for the points m_n. (A start after pretraining needs no
    widening: q(z | x) is then set narrow beside the components.)

    Args:
        weights (K,), loc (K, D), scale (K, D): the mixture fitted to the means;
        code_loc (N, D), code_scale (N, D): the codes' q(z | x).
    Returns:
        scale (K, D), widened.
    """
    r = _log_joint(code_loc, DiagonalMixture(weights, loc, scale)).softmax(-1)  # (N, K)
    mass = r.sum(0).clamp_min(torch.finfo(r.dtype).tiny)  # (K,)
    return (scale**2 + r.T @ code_scale**2 / mass[:, None]).sqrt()


def _as64(mixture: DiagonalMixture, like: Tensor) -> DiagonalMixture:
    return DiagonalMixture(*(t.detach().to(device=like.device, dtype=torch.float64)
                             for t in (mixture.weights, mixture.loc, mixture.scale)))


def mixture_log_likelihood(codes: Tensor, mixture: DiagonalMixture,
                           code_var: Tensor | None = None) -> float:
    """The E-step's objective per datum (float64 sums): without ``code_var`` the mean
    log-density of the codes (N, D) under the mixture; with it (N, D), VaDE's F of the module
    docstring (the variances as given: add ``reg_covar`` to them to get what
    :func:`diagonal_mixture_em` reports)."""
    x = codes.detach().to(torch.float64)
    v = None if code_var is None else code_var.detach().to(x)
    return float(_log_joint(x, _as64(mixture, x), v).logsumexp(-1).mean())


def check_min_weight(min_weight: float, num_clusters: int) -> None:
    """ValueError unless 0 <= min_weight < 1 / K."""
    if not 0 <= min_weight < 1.0 / num_clusters:
        raise ValueError(f"min_weight must be in [0, 1/K) = [0, {1 / num_clusters:.4g}), "
                         f"got {min_weight}")


def floor_weights(new: DiagonalMixture, old: DiagonalMixture, min_weight: float
                  ) -> tuple[DiagonalMixture, list[int]]:
    """Keep alive the components of ``new`` whose weight fell below ``min_weight``: they get
    that weight and keep ``old``'s mean and scale; the others share the rest of the mass.

    Returns the mixture and the indices of the floored components.
    """
    low = new.weights < min_weight
    if not bool(low.any()):
        return new, []
    weights = torch.where(low, torch.full_like(new.weights, min_weight),
                          new.weights * (1 - min_weight * low.sum()) / new.weights[~low].sum())
    loc = torch.where(low[:, None], old.loc.to(new.loc), new.loc)
    scale = torch.where(low[:, None], old.scale.to(new.scale), new.scale)
    return DiagonalMixture(weights, loc, scale), low.nonzero().flatten().tolist()


def warn_floored(dying: set[int], min_weight: float) -> None:
    if dying:
        log.warning("E-step: component(s) %s would have got a weight below %.2g; floored at "
                    "it so they stay alive (fewer clusters, or a longer pretraining, may fit "
                    "the data better)", sorted(dying), min_weight)


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
        codes: (N, D) on any device: points, or the means m of q(z | x).
        init: the starting mixture (the current prior, so the E-step is warm-started).
        iterations: EM steps (>= 1).
        reg_covar: added to every variance after each M-step (scikit-learn's ``reg_covar``;
            with ``code_var``, it counts as extra code variance, see the module docstring).
        min_weight: the floor for a component's weight; a component whose weight would fall
            below it is kept alive at this weight and a warning is logged.
        code_var: (N, D) optional variances s^2 of q(z | x): then coordinate ascent on VaDE's
            bound (responsibilities with the variance term, variance update with E_q[z^2]);
            None treats the codes as exact points (scikit-learn's update).
    Returns:
        the new mixture (float32, on the codes' device) and the objective it maximises per datum
        (the module docstring) before the first step and after every step (``iterations + 1``
        values; non-decreasing while no component is floored).
    """
    if iterations < 1:
        raise ValueError(f"the E-step needs at least 1 iteration, got {iterations}")
    if codes.dim() != 2:
        raise ValueError(f"codes must have shape (N, D), got {tuple(codes.shape)}")
    if code_var is not None and code_var.shape != codes.shape:
        raise ValueError(f"code_var must have the codes' shape {tuple(codes.shape)}, got "
                         f"{tuple(code_var.shape)}")
    check_min_weight(min_weight, init.weights.shape[0])
    x = codes.detach().to(torch.float64)
    n = x.shape[0]
    m = _as64(init, x)
    s2 = None if code_var is None else code_var.detach().to(x)
    v = None if s2 is None else s2 + reg_covar  # reg_covar counts as code variance in r and F
    x2 = x**2 if s2 is None else x**2 + s2  # E_q[z^2]; reg_covar is added to var below
    history = []
    dying: set[int] = set()
    for _ in range(iterations):
        log_joint = _log_joint(x, m, v)
        log_norm = log_joint.logsumexp(-1, keepdim=True)
        history.append(float(log_norm.mean()))
        resp = (log_joint - log_norm).exp()  # (N, K)
        nk = resp.sum(0) + 10 * _EPS64
        loc = resp.T @ x / nk[:, None]
        var = resp.T @ x2 / nk[:, None] - loc**2 + reg_covar
        scale = var.clamp_min(reg_covar if reg_covar > 0 else 1e-12).sqrt()
        m, floored = floor_weights(DiagonalMixture(nk / n, loc, scale), m, min_weight)
        dying.update(floored)
    history.append(float(_log_joint(x, m, v).logsumexp(-1).mean()))
    warn_floored(dying, min_weight)
    out = DiagonalMixture(*(t.to(device=codes.device, dtype=torch.float32)
                            for t in (m.weights, m.loc, m.scale)))
    return out, history
