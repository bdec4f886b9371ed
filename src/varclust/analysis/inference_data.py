"""A fitted :class:`~varclust.VarClust` as an ArviZ ``InferenceData``.

``az.from_pyro`` only takes MCMC runs, so the groups are built with ``az.from_dict`` (draws
shaped (chain=1, draw, ...)). Groups, variables and dims (R = ``num_samples``, N data, K
clusters, D latent dims, E epochs, data dims e.g. ``channel, height, width``):

========================  ======================================  ===============================
group                     variable                                dims
========================  ======================================  ===============================
posterior                 ``z``                                   chain, draw, datum, latent
posterior                 ``responsibilities`` p(c | z, x)        chain, draw, datum, cluster
posterior                 ``mixture_weights``                     chain, draw, cluster
posterior                 ``mixture_loc``, ``mixture_scale``      chain, draw, cluster, latent
log_likelihood            ``x``: estimate of log p(x_i)           chain, draw, datum
sample_stats              ``assignment_entropy`` (nats)           chain, draw, datum
sample_stats              ``elbo`` per datum, per epoch           epoch
observed_data             ``x``                                   datum, *data dims
posterior_predictive      ``reconstruction`` E[x | z]             chain, draw, datum, *data dims
constant_data (labels)    ``label``                               datum
========================  ======================================  ===============================

The mixture parameters are point estimates (learned by SVI), repeated over the draws; the
posterior_predictive group keeps only the first ``num_reconstructions`` draws (images are big).

**Caveat on log_likelihood.** Draw r of ``log_likelihood.x`` is an importance-weighted (IWAE)
estimate of log p(x_i) from ``importance_samples`` proposals of the guide (see
:mod:`varclust.analysis.importance`), not log p(x_i | theta_r) at a posterior draw of global
parameters: the fit has no such draws. So ``az.loo``/``az.waic``/``az.compare`` rank fits by
these estimates, which sit below log p(x_i) in expectation (more ``importance_samples`` tighten
them), and their ``p_loo``/``p_waic`` and Pareto-k warnings measure the estimates' Monte Carlo
noise, not model complexity; PSIS-LOO's harmonic-mean flavour penalises the noisier fit. ArviZ's
lppd (log of the mean of exp(log_likelihood) over draws) pools all R * S proposals into one
IWAE estimate, the tightest of these numbers: when it and LOO disagree, raise
``importance_samples``. Pass held-out data to rank fits by their predictions of new data.
Comparing fits is meaningful only between likelihoods that are densities of the same data: the
Bernoulli likelihood on grey-level pixels is a cross-entropy score, not a density, and must not
be compared with a Gaussian one.

Supported: ArviZ 0.17 to 0.23 (``pyproject.toml`` pins ``arviz<1``). ArviZ 1.x returns an
``xarray.DataTree`` and its ``from_dict`` takes one nested dict; it is not supported yet.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import arviz as az
import numpy as np
import torch
import xarray as xr
from numpy.typing import ArrayLike
from torch import Tensor

from ..inference.batching import batched_apply
from .importance import importance_draws

if TYPE_CHECKING:
    from ..estimator import VarClust

__all__ = ["DATA_DIMS", "to_inference_data"]

#: names of the data dims after ``datum``, by the rank of one datum
DATA_DIMS = {1: ("feature",), 2: ("height", "width"), 3: ("channel", "height", "width")}


def _draws(values: Tensor | np.ndarray) -> np.ndarray:
    """(draw, ...) -> (chain=1, draw, ...) numpy."""
    arr = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    return arr[None]


def _repeat(values: Tensor, num_draws: int) -> np.ndarray:
    """A point estimate (...) repeated as (chain=1, draw, ...)."""
    arr = values.detach().cpu().numpy()
    return np.broadcast_to(arr, (1, num_draws, *arr.shape)).copy()


def to_inference_data(
    fit: VarClust,
    data: ArrayLike | Tensor,
    num_samples: int = 100,
    *,
    importance_samples: int = 16,
    num_reconstructions: int = 4,
    labels: ArrayLike | None = None,
    seed: int = 0,
) -> az.InferenceData:
    """Draws from a fitted model's posterior on ``data`` as an ArviZ ``InferenceData``.

    Args:
        fit: a fitted :class:`~varclust.VarClust`.
        data: (N, ...) the data to describe, floats in [0, 1] of the fit's data shape.
        num_samples: R, draws per datum (each one code z, its responsibilities and one
            importance-weighted log-likelihood estimate).
        importance_samples: S, guide proposals behind each draw (the cost is R * S decoder
            passes per datum).
        num_reconstructions: draws kept in ``posterior_predictive`` (at most R).
        labels: (N,) optional true classes, stored as ``constant_data.label``.
        seed: seeds the Monte Carlo draws (the global RNG state is left as it was).

    Returns:
        ``InferenceData`` with the groups and dims of this module's table; save it with
        ``idata.to_netcdf(path)``, reload with ``az.from_netcdf(path)``.
    """
    fit._require_fitted()
    if not fit.model.scores_with_likelihood:
        raise ValueError(
            f"to_inference_data needs a decoder with a likelihood: the {fit.config.generator} "
            "generator scores x by a training loss, which is not a density of x; use an mlp or "
            "conv generator"
        )
    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2 for az.loo/az.waic, got {num_samples}")
    if not 1 <= num_reconstructions <= num_samples:
        raise ValueError(
            f"num_reconstructions must be in [1, num_samples={num_samples}], "
            f"got {num_reconstructions}"
        )
    x = fit._prepare(data, name="data")
    num_data = len(x)
    label_array = None
    if labels is not None:
        label_array = np.asarray(labels)
        if label_array.shape != (num_data,):
            raise ValueError(f"labels must have shape ({num_data},), got {label_array.shape}")

    fit.model.eval()
    fit.guide.eval()
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        draws = importance_draws(fit.model, fit.guide, x, num_samples, importance_samples)
    resp = draws.responsibilities
    entropy = -(resp * resp.clamp_min(1e-30).log()).sum(-1)  # (R, N)
    recon = batched_apply(
        fit.model.decode_mean, draws.z[:num_reconstructions].transpose(0, 1), batch_size=512
    ).transpose(0, 1)  # (R', N, *data_shape)

    prior = fit.model.prior
    data_dims = DATA_DIMS.get(x.dim() - 1, tuple(f"data_dim_{i}" for i in range(x.dim() - 1)))
    coords = {
        "datum": np.arange(num_data),
        "cluster": np.arange(fit.config.num_clusters),
        "latent": np.arange(draws.z.shape[-1]),
    }
    dims = {
        "z": ["datum", "latent"],
        "responsibilities": ["datum", "cluster"],
        "mixture_weights": ["cluster"],
        "mixture_loc": ["cluster", "latent"],
        "mixture_scale": ["cluster", "latent"],
        "x": ["datum", *data_dims],
        "assignment_entropy": ["datum"],
        "reconstruction": ["datum", *data_dims],
        "label": ["datum"],
    }
    posterior = {"z": _draws(draws.z), "responsibilities": _draws(resp)}
    for name, value in _mixture_point_estimates(prior).items():
        posterior[f"mixture_{name}"] = _repeat(value, num_samples)
    idata = az.from_dict(
        posterior=posterior,
        sample_stats={"assignment_entropy": _draws(entropy)},
        observed_data={"x": x.cpu().numpy()},
        posterior_predictive={"reconstruction": _draws(recon)},
        constant_data={"label": label_array} if label_array is not None else None,
        coords=coords,
        dims=dims,
        attrs={
            "inference_library": "pyro",
            "varclust_config": json.dumps(fit.config.to_dict()),
            "num_samples": num_samples,
            "importance_samples": importance_samples,
            "log_likelihood": "importance-weighted estimates of log p(x_i), see varclust docs",
        },
    )
    # log_likelihood.x pairs with observed_data.x (ArviZ's convention) but has other dims
    idata.extend(
        az.from_dict(
            log_likelihood={"x": _draws(draws.log_likelihood)},
            coords={"datum": coords["datum"]},
            dims={"x": ["datum"]},
        )
    )
    _add_elbo_trace(idata, fit.history)
    return idata


def _mixture_point_estimates(prior: torch.nn.Module) -> dict[str, Tensor]:
    """The prior's mixture weights (K,), loc and scale (K, D) as point estimates, or {} (e.g. a
    standard normal prior). A prior whose parameters are random (``bayes-gmm``) gives its global
    guide's point estimates through ``point_parameters()``."""
    with torch.no_grad():
        params = prior.point_parameters()
    if {"log_weights", "loc", "scale"} <= params.keys():
        return {"weights": params["log_weights"].exp(), "loc": params["loc"],
                "scale": params["scale"]}
    return {}


def _add_elbo_trace(idata: az.InferenceData, history: list[dict]) -> None:
    """Put the training ELBO per datum (one value per epoch) into ``sample_stats``."""
    if not history:
        return
    elbo = xr.DataArray(
        np.array([h["elbo"] for h in history], dtype=np.float64),
        dims=["epoch"],
        coords={"epoch": np.array([int(h["epoch"]) for h in history])},
    )
    idata.sample_stats["elbo"] = elbo
