"""Importance-weighted estimates of log p(x_i) per datum, from a fit's own Pyro model and guide.

For each datum the guide proposes codes z_s ~ q(z | x_i), s = 1..S, and

    log p^(x_i) = logsumexp_s [log p(x_i, z_s) - log q(z_s | x_i)] - log S,

where log p(x_i, z_s) sums the cluster out exactly (the model's enumerated sites are summed by
Pyro's ``poutine.enum``). This is the IWAE bound (Burda et al. 2016): its expectation is below
log p(x_i) and rises to it as S grows. Nothing here depends on which prior, decoder or guide the
fit uses: model and guide are traced as Pyro programs with the signature ``(x, indices,
num_data)``, particles vectorised by an outer plate as in Pyro's ``Trace_ELBO``.

Only sites inside the ``data`` plate are counted. Global sites (outside it, e.g. a prior's
parameters given a guide of their own) are handled in one of two ways:

- by default they are held at the guide's draw, one draw per proposal, so that each estimate
  is of log of the integral of p(x_i | g) q(g) dg: with a point-mass guide (or none) that is
  log p(x_i | point estimate); with a posterior over g, the posterior predictive density under q;
- given ``global_values`` (R draws g_r, e.g. from the global posterior), estimate r is of
  log p(x_i | g_r): the model is conditioned on g_r (``poutine.condition``) in a ``draws`` plate
  left of the particles, and all R estimates share the same S proposals z_s (common random
  numbers):

      log p^(x_i | g_r) = logsumexp_s [log p(x_i | z_s) + log p(z_s | g_r) - log q(z_s | x_i)]
                          - log S.

  The decoder runs S times per datum, not R * S, and the estimate is a smooth function of g_r
  given the proposals: its spread over r is the spread of log p(x_i | g) over the posterior
  (what PSIS-LOO needs), not Monte Carlo noise of independent estimates; what the proposals'
  noise leaves is a bias shared by all draws of datum i, below log p(x_i | g_r) as any IWAE
  bound, which vanishes as S grows.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import Tensor

__all__ = ["ImportanceDraws", "importance_draws"]

#: the model's data plate (see ``model.generative.data_plate``); its dim is -1
DATA_PLATE = "data"
#: the particle plate, left of the data plate
PARTICLE_DIM = -2
#: the plate of the draws of the global parameters, left of the particle plate
DRAWS_PLATE, DRAWS_DIM = "draws", -3
#: the cluster site of the model's prior
CLUSTER_SITE = "cluster"


@dataclass
class ImportanceDraws:
    """R importance-weighted estimates per datum, each from S proposals (independent, or at R
    draws of the globals sharing the proposals: :func:`importance_draws`).

    Attributes:
        log_likelihood: (R, N) estimate r of log p(x_i) (or of log p(x_i | g_r)): logsumexp of
            its S weights - log S.
        z: (R, N, D) one code per estimate, resampled from its S proposals in proportion to their
            weights (sampling-importance-resampling), so closer to p(z | x) than q(z | x) is.
        responsibilities: (R, N, K) p(c | z_r, x_i) for that code; rows sum to 1.
    """

    log_likelihood: Tensor
    z: Tensor
    responsibilities: Tensor


def _sum_log_probs(trace: poutine.Trace, sites: list[str]) -> Tensor:
    total: Tensor | int = 0
    for name in sites:
        total = total + trace.nodes[name]["log_prob"]
    return total


def _per_datum_sites(trace: poutine.Trace) -> list[str]:
    """Sample sites inside the data plate (global sites carry no per-datum density)."""
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and any(frame.name == DATA_PLATE for frame in site["cond_indep_stack"])
    ]


def _cluster_logits(
    model_trace: poutine.Trace, joint: Tensor, z: Tensor, prior: PyroModule, cluster_site: str,
    num_plates: int,
) -> Tensor:
    """Unnormalised log p(c = k | z, x) for every k: (K, *plates).

    When the model enumerates the cluster, its dim of ``joint`` (*enumerated, *plates) is kept
    and any other enumerated site summed out; when a guide sampled the cluster (the model then
    replays it), or when the prior's clusters are a mixture fitted to the codes (the plain VAE's
    ``normal`` prior, whose enumerated cluster z does not depend on), the prior's
    ``log_joint(z)`` (log p(c = k, z) at its point parameters, (..., K)) is used, z being the
    guide's codes (*guide plates, D).
    """
    if prior.fits_clusters_to_codes:  # the model's cluster says nothing: 1/K for every datum
        return prior.log_joint(z).movedim(-1, 0)
    site = model_trace.nodes.get(cluster_site)
    if site is not None and site["infer"].get("_enumerate_dim") is not None:
        dim = joint.dim() + site["infer"]["_enumerate_dim"]
        moved = joint.movedim(dim, 0)
        return moved.reshape(moved.shape[0], -1, *joint.shape[-num_plates:]).logsumexp(1)
    return prior.log_joint(z).movedim(-1, 0)  # every MixturePrior has log_joint


def _in_plates(fn, plates: list[tuple[str, int, int]]):
    """fn run inside the given (name, size, dim) plates: vectorised particles (and draws)."""

    def run(*args):
        with ExitStack() as stack:
            for name, size, dim in plates:
                stack.enter_context(pyro.plate(name, size, dim=dim))
            return fn(*args)

    return run


@torch.no_grad()
def _batch_draws(
    model: PyroModule, guide: PyroModule, x: Tensor, num_draws: int, num_importance: int,
    global_values: dict[str, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One batch x (B, ...): log-lik (R, B), z (R, B, D), responsibilities (R, B, K)."""
    r, s, batch = num_draws, num_importance, x.shape[0]
    if global_values is None:
        # R * S proposals in one plate; a global site the guide samples gets a draw per proposal
        guide_plates = [("particles", r * s, PARTICLE_DIM)]
        model_fn = _in_plates(model, guide_plates)
        guide_fn = _in_plates(guide, guide_plates)
    else:
        # S proposals shared by the R draws of the globals: the model runs in a draws plate left
        # of the particles, conditioned on draw r there; the guide's global sites are held at
        # draw 0 (their density is not counted, only the local sites' proposals are used)
        guide_plates = [("particles", s, PARTICLE_DIM)]
        model_plates = [(DRAWS_PLATE, r, DRAWS_DIM), *guide_plates]
        held = {name: value.reshape(r, *[1] * (-DRAWS_DIM - 1), *value.shape[1:])
                for name, value in global_values.items()}
        model_fn = poutine.condition(_in_plates(model, model_plates), data=held)
        guide_fn = poutine.condition(_in_plates(guide, guide_plates),
                                     data={name: value[0] for name, value in global_values.items()})
    plates = (r * s, batch) if global_values is None else (r, s, batch)
    guide_trace = poutine.trace(guide_fn).get_trace(x)
    model_trace = poutine.trace(
        poutine.replay(poutine.enum(model_fn, first_available_dim=-len(plates) - 1),
                       trace=guide_trace)
    ).get_trace(x)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    guide_sites = _per_datum_sites(guide_trace)
    if "z" not in guide_sites:
        raise ValueError(
            "the guide has no sample site 'z' in the data plate; the importance estimate needs "
            f"q(z | x) (the guide's per-datum sites: {guide_sites})"
        )
    joint = _sum_log_probs(model_trace, _per_datum_sites(model_trace))  # (*enumerated, *plates)
    joint = joint.expand(*joint.shape[: joint.dim() - len(plates)], *plates)
    log_joint = joint.reshape(-1, r, s, batch).logsumexp(0)  # (R, S, B): clusters summed out
    guide_shape = (r * s, batch) if global_values is None else (s, batch)
    log_q = _sum_log_probs(guide_trace, guide_sites).expand(guide_shape).reshape(-1, s, batch)
    # float64 for the weights: their spread can be hundreds of nats
    log_w = (log_joint - log_q).double()  # (R, S, B)
    log_lik = log_w.logsumexp(1) - math.log(s)  # (R, B)

    # sampling-importance-resampling: one code per estimate, drawn in proportion to its weight
    z_guide = guide_trace.nodes["z"]["value"].expand(*guide_shape, -1)
    z_all = z_guide.reshape(-1, s, batch, z_guide.shape[-1])  # (R or 1, S, B, D)
    pick = torch.distributions.Categorical(logits=log_w.permute(0, 2, 1)).sample()  # (R, B)
    rows = torch.arange(r, device=x.device)[:, None].expand(r, batch)
    rows_z = rows if z_all.shape[0] == r else torch.zeros_like(rows)
    cols = torch.arange(batch, device=x.device).expand(r, batch)
    z = z_all[rows_z, pick, cols]  # (R, B, D)
    logits = _cluster_logits(model_trace, joint, z_guide, model.prior, CLUSTER_SITE,
                             len(plates))
    logits = logits.reshape(logits.shape[0], -1, s, batch).expand(-1, r, s, batch)
    chosen = logits[:, rows, pick, cols]  # (K, R, B)
    resp = (chosen - chosen.logsumexp(0, keepdim=True)).exp().permute(1, 2, 0)  # (R, B, K)
    return log_lik, z, resp


def importance_draws(
    model: PyroModule,
    guide: PyroModule,
    x: Tensor,
    num_draws: int,
    num_importance: int,
    max_particles_per_batch: int = 1 << 15,
    global_values: dict[str, Tensor] | None = None,
) -> ImportanceDraws:
    """R = ``num_draws`` estimates of log p(x_i), each from S = ``num_importance`` proposals of
    the guide, for every datum of x (N, ...); batched so that at most
    ``max_particles_per_batch`` (R * S * batch) codes are scored at once.

    Without ``global_values`` the R estimates are independent (R * S proposals). With
    ``global_values`` (site name -> (R, ...), e.g. draws from
    :func:`~varclust.analysis.global_posterior.draw_globals`) estimate r is of
    log p(x_i | globals_r), the model conditioned on draw r of its global sites, and the R
    estimates share the same S proposals (common random numbers, module docstring).

    Model and guide must be Pyro programs called as ``fn(x)`` with a ``data`` plate over x and a
    per-datum code site ``z``; the model's prior is ``model.prior``.
    """
    if num_draws < 1 or num_importance < 1:
        raise ValueError(
            f"num_draws and num_importance must be at least 1, got {num_draws}, {num_importance}"
        )
    if global_values is not None:
        for name, value in global_values.items():
            if value.shape[0] != num_draws:
                raise ValueError(f"global_values[{name!r}] has {value.shape[0]} draws, "
                                 f"not num_draws={num_draws}")
    batch = max(1, max_particles_per_batch // (num_draws * num_importance))
    parts = [_batch_draws(model, guide, xb, num_draws, num_importance, global_values)
             for xb in x.split(batch)]
    log_lik, z, resp = (torch.cat(t, dim=1) for t in zip(*parts))
    return ImportanceDraws(log_likelihood=log_lik, z=z, responsibilities=resp)
