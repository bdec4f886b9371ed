"""Importance-weighted estimates of log p(x_i) per datum, from a fit's own Pyro model and guide.

For each datum the guide proposes codes z_s ~ q(z | x_i), s = 1..S, and

    log p^(x_i) = logsumexp_s [log p(x_i, z_s) - log q(z_s | x_i)] - log S,

where log p(x_i, z_s) sums the cluster out exactly (the model's enumerated sites are summed by
Pyro's ``poutine.enum``). This is the IWAE bound (Burda et al. 2016): its expectation is below
log p(x_i) and rises to it as S grows. Nothing here depends on which prior, decoder or guide the
fit uses: model and guide are traced as Pyro programs with the signature ``(x, indices,
num_data)``, particles vectorised by an outer plate as in Pyro's ``Trace_ELBO``.

Only sites inside the ``data`` plate are counted. Global sites (outside it, e.g. a prior's
parameters given a guide of their own) are held at the guide's draw, so the estimate is then
of log p(x_i | globals), and with a non-degenerate guide over them each proposal has its own draw.
"""

from __future__ import annotations

import math
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
#: the cluster site of the model's prior
CLUSTER_SITE = "cluster"


@dataclass
class ImportanceDraws:
    """R independent importance-weighted estimates per datum, each from S proposals.

    Attributes:
        log_likelihood: (R, N) estimate r of log p(x_i) (logsumexp of its S weights - log S).
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
    model_trace: poutine.Trace, joint: Tensor, z: Tensor, prior: PyroModule, cluster_site: str
) -> Tensor:
    """Unnormalised log p(c = k | z, x) for every k: (K, P, B).

    When the model enumerates the cluster, its dim of ``joint`` (*enumerated, P, B) is kept and
    any other enumerated site summed out; when a guide sampled the cluster (the model then
    replays it), the prior's ``log_joint(z)`` (log p(c = k, z), (..., K)) is used.
    """
    site = model_trace.nodes.get(cluster_site)
    if site is not None and site["infer"].get("_enumerate_dim") is not None:
        dim = joint.dim() + site["infer"]["_enumerate_dim"]
        moved = joint.movedim(dim, 0)
        return moved.reshape(moved.shape[0], -1, *joint.shape[-2:]).logsumexp(1)
    return prior.log_joint(z).movedim(-1, 0)  # every MixturePrior has log_joint


@torch.no_grad()
def _batch_draws(
    model: PyroModule, guide: PyroModule, x: Tensor, num_draws: int, num_importance: int
) -> tuple[Tensor, Tensor, Tensor]:
    """One batch x (B, ...): log-lik (R, B), z (R, B, D), responsibilities (R, B, K)."""
    particles = num_draws * num_importance
    batch = x.shape[0]

    def vectorised(fn):
        def run(*args):
            with pyro.plate("particles", particles, dim=PARTICLE_DIM):
                return fn(*args)

        return run

    guide_trace = poutine.trace(vectorised(guide)).get_trace(x)
    model_trace = poutine.trace(
        poutine.replay(
            poutine.enum(vectorised(model), first_available_dim=PARTICLE_DIM - 1),
            trace=guide_trace,
        )
    ).get_trace(x)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    guide_sites = _per_datum_sites(guide_trace)
    if "z" not in guide_sites:
        raise ValueError(
            "the guide has no sample site 'z' in the data plate; the importance estimate needs "
            f"q(z | x) (the guide's per-datum sites: {guide_sites})"
        )
    joint = _sum_log_probs(model_trace, _per_datum_sites(model_trace))  # (*enumerated, P, B)
    joint = joint.expand(*joint.shape[:-2], particles, batch)
    log_joint = joint.reshape(-1, particles, batch).logsumexp(0)  # (P, B): clusters summed out
    log_q = _sum_log_probs(guide_trace, guide_sites).expand(particles, batch)
    # float64 for the weights: their spread can be hundreds of nats
    log_w = (log_joint - log_q).double().reshape(num_draws, num_importance, batch)
    log_lik = log_w.logsumexp(1) - math.log(num_importance)  # (R, B)

    # sampling-importance-resampling: one code per estimate, drawn in proportion to its weight
    z_all = guide_trace.nodes["z"]["value"].expand(particles, batch, -1)
    pick = torch.distributions.Categorical(logits=log_w.permute(0, 2, 1)).sample()  # (R, B)
    flat = (torch.arange(num_draws, device=x.device)[:, None] * num_importance + pick)  # (R, B)
    cols = torch.arange(batch, device=x.device).expand(num_draws, batch)
    z = z_all[flat, cols]  # (R, B, D)
    logits = _cluster_logits(model_trace, joint, z_all, model.prior, CLUSTER_SITE)  # (K, P, B)
    chosen = logits[:, flat, cols]  # (K, R, B)
    resp = (chosen - chosen.logsumexp(0, keepdim=True)).exp().permute(1, 2, 0)  # (R, B, K)
    return log_lik, z, resp


def importance_draws(
    model: PyroModule,
    guide: PyroModule,
    x: Tensor,
    num_draws: int,
    num_importance: int,
    max_particles_per_batch: int = 1 << 15,
) -> ImportanceDraws:
    """R = ``num_draws`` independent estimates of log p(x_i), each from S = ``num_importance``
    proposals of the guide, for every datum of x (N, ...); batched so that at most
    ``max_particles_per_batch`` (R * S * batch) codes are decoded at once.

    Model and guide must be Pyro programs called as ``fn(x)`` with a ``data`` plate over x and a
    per-datum code site ``z``; the model's prior is ``model.prior``.
    """
    if num_draws < 1 or num_importance < 1:
        raise ValueError(
            f"num_draws and num_importance must be at least 1, got {num_draws}, {num_importance}"
        )
    batch = max(1, max_particles_per_batch // (num_draws * num_importance))
    parts = [_batch_draws(model, guide, xb, num_draws, num_importance) for xb in x.split(batch)]
    log_lik, z, resp = (torch.cat(t, dim=1) for t in zip(*parts))
    return ImportanceDraws(log_likelihood=log_lik, z=z, responsibilities=resp)
