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
posterior (*-full)        ``mixture_scale_tril``                  chain, draw, cluster, latent,
                                                                  latent_column
posterior (dp, learned)   ``dp_concentration`` alpha              chain, draw
log_likelihood            ``x``: see below                        chain, draw, datum
sample_stats              ``assignment_entropy`` (nats)           chain, draw, datum
sample_stats              ``elbo`` per datum, per epoch           epoch
observed_data             ``x``                                   datum, *data dims
posterior_predictive      ``reconstruction`` E[x | z]             chain, draw, datum, *data dims
constant_data (labels)    ``label``                               datum
========================  ======================================  ===============================

The posterior_predictive group keeps only the first ``num_reconstructions`` draws (images are
big). What a draw is depends on whether the fit has a posterior over its global parameters
(:func:`~varclust.analysis.global_posterior.global_posterior`); ``idata.attrs["draws"]`` says
which of the two it is.

**A fit with a posterior over the globals** (``prior="dp"``, or ``prior="bayes-gmm"`` with
``global_guide="mean-field"``): draw r is g_r ~ q(g), the mean-field variational posterior of
the mixture's weights (or sticks), means and scales (and the DP's alpha when learned), drawn
with Pyro's ``Predictive`` from the prior's global guide; ``mixture_*`` are the mixture at g_r.
``log_likelihood.x`` at draw r is an estimate of log p(x_i | g_r) in which the datum's own
latents (its cluster and code) are integrated out: the cluster exactly, the code by importance
sampling with S = ``importance_samples`` proposals of q(z | x_i), the same S for every draw
(:mod:`varclust.analysis.importance`). So each draw of ``log_likelihood`` belongs to a posterior
draw, as ArviZ assumes, and ``az.loo`` computes PSIS-LOO: the leave-one-out predictive density
p(x_i | x_{-i}) = E_{p(g | x)}[p(x_i | g)^{-1}]^{-1}, by Pareto-smoothed importance sampling over
the draws, the unit left out being a datum with its latents. ``az.waic``, ``az.compare`` (which
ranks fits by elpd_loo with ``dse`` from paired per-datum differences) and ``p_loo`` (the
effective number of global parameters) mean what ArviZ says they mean, with two qualifications:
the draws are from q, an approximation of p(g | x) that is usually narrower, which PSIS cannot
correct (q in place of p(g | x) is the assumption; the Pareto-k diagnostics flag data whose
leave-one-out posterior moves far from it); and each log p(x_i | g_r) is an IWAE bound, biased
low by an amount that shrinks as S grows and is shared by all draws of a datum, so it shifts
elpd_loo but barely touches p_loo.

**A point-estimate fit** (``gmm``, ``normal``, ``bayes-gmm`` with the MAP guide): there is no
posterior to draw from. The mixture is the point estimate, repeated over the draws, and draw r
of ``log_likelihood.x`` is one of R *independent* importance-weighted estimates of
log p(x_i | point estimate), each from S proposals. These are not posterior draws: ``az.loo``
over them computes a harmonic mean of noisy estimates, and its ``p_loo`` and Pareto-k measure
the Monte Carlo noise, not complexity. ``to_inference_data`` warns
(:class:`PointEstimateWarning`) and ``idata.attrs["log_likelihood"]`` says so. Compare
point-estimate fits with :func:`~varclust.analysis.heldout.heldout_log_likelihood` on held-out
data instead. (ArviZ's lppd, the log of the mean of exp(log_likelihood) over the draws, is then
a single IWAE estimate with R * S proposals, the tightest of these numbers.)

Comparing fits is meaningful only between likelihoods that are densities of the same data: the
Bernoulli likelihood on grey-level pixels is a cross-entropy score, not a density, and must not
be compared with a Gaussian one.

Supported: ArviZ 0.17 to 0.23 (``pyproject.toml`` pins ``arviz<1``). ArviZ 1.x returns an
``xarray.DataTree`` and its ``from_dict`` takes one nested dict; it is not supported yet.
"""

from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING

import arviz as az
import numpy as np
import torch
import xarray as xr
from numpy.typing import ArrayLike
from torch import Tensor

from ..inference.batching import batched_apply
from ..modes import evaluating
from ..summaries import mixture_parameters
from .global_posterior import draw_globals, global_posterior, mixture_at_draws
from .importance import importance_draws

if TYPE_CHECKING:
    from ..estimator import VarClust

__all__ = ["DATA_DIMS", "PointEstimateWarning", "to_inference_data"]

#: names of the data dims after ``datum``, by the rank of one datum
DATA_DIMS = {1: ("feature",), 2: ("height", "width"), 3: ("channel", "height", "width")}


class PointEstimateWarning(UserWarning):
    """``to_inference_data`` of a fit without a posterior over its global parameters: the
    draws of ``log_likelihood`` are independent estimates, not posterior draws."""


POINT_ESTIMATE_NOTE = (
    "independent importance-weighted estimates of log p(x_i | point estimate), one per draw; "
    "NOT posterior draws (the fit has no posterior over its global parameters), so az.loo and "
    "az.compare over them are not leave-one-out: compare point-estimate fits with "
    "varclust.analysis.heldout_log_likelihood on held-out data"
)
POSTERIOR_NOTE = (
    "draw r: importance-weighted estimate of log p(x_i | g_r), g_r drawn from the variational "
    "posterior over the global parameters, the datum's latents integrated out"
)


def _draws(values: Tensor | np.ndarray) -> np.ndarray:
    """(draw, ...) -> (chain=1, draw, ...) numpy."""
    arr = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    return arr[None]


def _repeat(values: np.ndarray, num_draws: int) -> np.ndarray:
    """A point estimate (...) repeated as (chain=1, draw, ...)."""
    return np.broadcast_to(values, (1, num_draws, *values.shape)).copy()


def to_inference_data(
    fit: VarClust,
    data: ArrayLike | Tensor,
    num_samples: int = 100,
    *,
    importance_samples: int = 16,
    num_reconstructions: int | None = None,
    labels: ArrayLike | None = None,
    seed: int = 0,
) -> az.InferenceData:
    """Draws from a fitted model's posterior on ``data`` as an ArviZ ``InferenceData``.

    With a posterior over the global parameters (``dp``, mean-field ``bayes-gmm``) each draw is
    one draw of the globals from it, and ``az.loo``/``az.compare`` are PSIS-LOO; for a
    point-estimate fit the draws of ``log_likelihood`` are independent estimates at the point
    estimate, not posterior draws, and a :class:`PointEstimateWarning` says so (module
    docstring).

    Args:
        fit: a fitted :class:`~varclust.VarClust`.
        data: (N, ...) the data to describe, floats in [0, 1] of the fit's data shape.
        num_samples: R, draws per datum (each one code z, its responsibilities and one
            importance-weighted log-likelihood estimate; with a global posterior, one draw of
            the globals).
        importance_samples: S, guide proposals behind each draw (the cost is R * S decoder
            passes per datum for a point-estimate fit; S, shared by the R draws, with a
            global posterior).
        num_reconstructions: draws kept in ``posterior_predictive`` (at most R; default
            min(4, R)).
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
    if num_reconstructions is None:
        num_reconstructions = min(4, num_samples)
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

    prior = fit.model.prior
    posterior_guide = global_posterior(prior)
    if posterior_guide is None:
        warnings.warn(
            "this fit has point estimates of its global parameters, not a posterior: "
            "log_likelihood holds " + POINT_ESTIMATE_NOTE, PointEstimateWarning, stacklevel=2)
    with evaluating(fit.model, fit.guide):  # modes restored after
        mixture: dict[str, np.ndarray] = {}
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(seed)
            if posterior_guide is None:
                draws = importance_draws(fit.model, fit.guide, x, num_samples, importance_samples)
                for name, value in _mixture_point_estimates(prior).items():
                    mixture[f"mixture_{name}"] = _repeat(value, num_samples)
            else:
                globals_ = draw_globals(posterior_guide, num_samples)
                draws = importance_draws(fit.model, fit.guide, x, num_samples, importance_samples,
                                         global_values=globals_)
                for name, value in mixture_at_draws(prior, globals_).items():
                    mixture[f"mixture_{name}"] = _draws(value.float())
                if "dp_concentration" in globals_:
                    mixture["dp_concentration"] = _draws(globals_["dp_concentration"])
        resp = draws.responsibilities
        entropy = -(resp * resp.clamp_min(1e-30).log()).sum(-1)  # (R, N)
        recon = batched_apply(
            fit.model.decode_mean, draws.z[:num_reconstructions].transpose(0, 1), batch_size=512
        ).transpose(0, 1)  # (R', N, *data_shape)

    data_dims = DATA_DIMS.get(x.dim() - 1, tuple(f"data_dim_{i}" for i in range(x.dim() - 1)))
    coords = {
        "datum": np.arange(num_data),
        "cluster": np.arange(fit.config.num_clusters),
        "latent": np.arange(draws.z.shape[-1]),
    }
    if "mixture_scale_tril" in mixture:  # a full-covariance prior's Cholesky factors
        coords["latent_column"] = coords["latent"]
    dims = {
        "z": ["datum", "latent"],
        "responsibilities": ["datum", "cluster"],
        "mixture_weights": ["cluster"],
        "mixture_loc": ["cluster", "latent"],
        "mixture_scale": ["cluster", "latent"],
        "mixture_scale_tril": ["cluster", "latent", "latent_column"],
        "x": ["datum", *data_dims],
        "assignment_entropy": ["datum"],
        "reconstruction": ["datum", *data_dims],
        "label": ["datum"],
    }
    posterior = {"z": _draws(draws.z), "responsibilities": _draws(resp), **mixture}
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
            "draws": "posterior" if posterior_guide is not None else "point estimate",
            "log_likelihood": POSTERIOR_NOTE if posterior_guide is not None
            else POINT_ESTIMATE_NOTE,
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


def _mixture_point_estimates(prior: torch.nn.Module) -> dict[str, np.ndarray]:
    """The mixture that defines the clusters as point estimates: weights (K,) summing to 1, loc
    and scale (K, D), the mean and standard deviation of each component p(z | c)
    (:func:`varclust.summaries.mixture_parameters`: any prior's ``component``, a Bayesian
    prior's point values, a plain VAE's mixture fitted to the codes), and a full-covariance
    prior's Cholesky factors ``scale_tril`` (K, D, D)."""
    with torch.no_grad():
        mixture = mixture_parameters(prior)
        tril = prior.point_parameters().get("scale_tril")
    point = {"weights": mixture["weights"], "loc": mixture["means"], "scale": mixture["scales"]}
    if tril is not None:
        point["scale_tril"] = tril.cpu().numpy()
    return point


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
