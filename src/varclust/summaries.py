"""Plain numbers about a fit, for notebooks and reports: the mixture, the clusters' mean images,
the ELBO per datum, a one-line description."""

from __future__ import annotations

from functools import singledispatch

import numpy as np
import torch
from torch import Tensor

from .inference.elbo import SyncFreeTraceEnum_ELBO
from .inference.persistence import FitRecord
from .model.normal_prior import StandardNormalPrior
from .model.priors import MixturePrior
from .modes import evaluating

__all__ = ["cluster_means", "describe", "mean_elbo", "mixture_parameters"]


@singledispatch
@torch.no_grad()
def mixture_parameters(prior: MixturePrior) -> dict[str, np.ndarray]:
    """The mixture that defines the clusters, as numpy arrays: ``weights`` (K,) summing to 1,
    ``means`` (K, D) and ``scales`` (K, D) of each component p(z | c) (its mean and standard
    deviation; point values of a Bayesian prior; for the standard-normal prior, the mixture
    fitted to the codes)."""
    params = prior.point_parameters()
    component = prior.component(params, torch.arange(prior.num_clusters))
    means = component.mean.expand(prior.num_clusters, prior.latent_dim)
    scales = component.stddev.expand(prior.num_clusters, prior.latent_dim)
    return {
        "weights": params["log_weights"].log_softmax(-1).exp().cpu().numpy(),
        "means": means.cpu().numpy(),
        "scales": scales.cpu().numpy(),
    }


@mixture_parameters.register
@torch.no_grad()
def _(prior: StandardNormalPrior) -> dict[str, np.ndarray]:
    """A plain VAE's clusters: the mixture fitted to its codes (its buffers)."""
    return {"weights": prior.fitted_weights.cpu().numpy(),
            "means": prior.fitted_loc.cpu().numpy(),
            "scales": prior.fitted_scale.cpu().numpy()}


def cluster_means(x: Tensor, responsibilities: np.ndarray) -> np.ndarray:
    """The mean datum of each cluster, each datum weighted by its responsibility.

    Args:
        x: (N, ...) the data; responsibilities: (N, K) the cluster posterior.
    Returns:
        (K, ...) float32; a cluster no datum belongs to (total responsibility 0) is NaN.
    """
    resp = torch.as_tensor(responsibilities, dtype=torch.float64)
    flat = x.detach().cpu().double().flatten(1)
    totals = resp.sum(0)
    means = (resp.T @ flat) / totals[:, None]
    return means.reshape(len(totals), *x.shape[1:]).float().numpy()


@torch.no_grad()
def mean_elbo(model, guide, x: Tensor, batch_size: int = 512) -> float:
    """The ELBO of data x (N, ...) per datum under a fitted model and guide, with the cluster
    summed out exactly and one draw of z per datum (the training objective on held-out data;
    higher is better).

    Each batch b of size B is scored as the training step scores it, as an estimate of the
    whole data set's ELBO, L_b = (N / B) sum_{i in b} l_i - KL_global (local terms l_i; the KL
    of the global latents, for the Bayesian priors, once); weighting L_b by B / N and summing
    over the batches gives sum_i l_i - KL_global, whatever the batch size: the global KL is
    counted once, not once a batch. Point-estimate priors have no global KL, and the result is
    the mean of the l_i."""
    elbo = SyncFreeTraceEnum_ELBO(max_plate_nesting=1)
    num_data = len(x)
    total = 0.0
    with evaluating(model, guide):
        for start in range(0, num_data, batch_size):
            batch = x[start:start + batch_size]
            indices = torch.arange(start, start + len(batch), device=batch.device)
            loss = float(elbo.loss(model, guide, batch, indices, num_data))
            total += loss * len(batch) / num_data
    return -total / num_data


def describe(vc: FitRecord) -> str:
    """One line naming the model and, when fitted, its data, its epochs and its last scores."""
    c = vc.config
    head = (f"VarClust(K={c.num_clusters}, prior={c.prior!r}, guide={c.guide!r}, "
            f"likelihood={c.likelihood!r}, latent_dim={c.latent_dim}, network={c.network!r}")
    if vc.model is None:
        return head + "; not fitted)"
    data = vc.data_fingerprint_
    seen = (f"fitted to {data['num_data']} x {tuple(data['shape'])}" if data
            else f"fitted to data of shape {vc.data_shape}")
    last = vc.history[-1] if vc.history else {}
    scores = ", ".join(f"{k} {last[k]:.3g}" for k in ("elbo", "acc", "nmi", "clusters_used")
                       if k in last)
    return f"{head}; {seen}, {len(vc.history)} epochs" + (f", last {scores})" if scores else ")")
