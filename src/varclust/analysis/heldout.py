"""Held-out importance-weighted log-likelihood: how well fits predict data they were not fitted to.

For a fit with global parameters theta and held-out data x*_1..x*_M, the quantity is the mean
held-out log predictive density per datum

    L = (1 / M) sum_i log p(x*_i | fit),

where p(x*_i | fit) = p(x*_i | theta^) for a point-estimate fit (``gmm``, ``normal``, MAP
``bayes-gmm``), and the posterior predictive density, the integral of p(x*_i | g) q(g) dg over
the variational posterior q of the globals, for a fit that has one (``dp``, mean-field
``bayes-gmm``). In both, the datum's cluster is summed out exactly and its code z integrated by
importance sampling with S = ``num_particles`` proposals z_s ~ q(z | x*_i) of the fit's guide
(with g_s ~ q(g) drawn per proposal where there is a posterior; see
:mod:`varclust.analysis.importance`):

    l_i = log (1 / S) sum_s p(x*_i, z_s [| g_s]) / q(z_s | x*_i),

the IWAE bound (Burda et al. 2016): E[l_i] <= log p(x*_i | fit), with a gap of about
Var(w) / (2 S E[w]^2) (delta method on the log of the mean weight w), which shrinks like 1 / S
and differs between fits (a better guide has a smaller one). The table is therefore a ranking
of lower bounds; that it is the ranking of the densities is checked by raising S until it stops
changing.

Uncertainty. The held-out data are a sample, so L is the mean of M draws l_i, with standard
error se = sd(l_i) / sqrt(M) (sd with ddof 1; it includes the importance estimate's Monte Carlo
noise, independent across data). Two fits scored on the *same* data are compared through the
paired differences d_i = l_i(best) - l_i(fit): diff = mean(d_i) = L(best) - L(fit) >= 0 and
diff_se = sd(d_i) / sqrt(M), which is far smaller than the two se's combined when the fits
agree on which data are easy (the per-datum scores are strongly correlated), as ArviZ's ``dse``
is for ``elpd_loo``. A diff of several diff_se is not a coin toss on these data. Neither se
covers the randomness of the fits themselves (seeds, initialisation): refit to see it.

This is not leave-one-out and not PSIS: it needs held-out data and no posterior draws, and
works for any fit with a likelihood. Use :func:`~varclust.analysis.to_inference_data` with
``az.loo`` for fits with a posterior over their globals (the ``dp`` prior) when there is no
data to hold out; use this for point-estimate fits, or to compare point-estimate and Bayesian
fits on the same footing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from ..modes import evaluating
from .importance import importance_draws

if TYPE_CHECKING:
    from ..estimator import VarClust

__all__ = ["heldout_log_likelihood", "heldout_pointwise", "heldout_table"]


def _check_comparable(fits: Mapping[str, VarClust]) -> None:
    if not fits:
        raise ValueError("no fits to compare")
    kinds = {}
    for name, fit in fits.items():
        fit._require_fitted()
        if not fit.model.scores_with_likelihood:
            raise ValueError(f"fit {name!r}: the {fit.config.generator_name} generator has no "
                             "likelihood of x (it scores x by a training loss, which is not a "
                             "density); use an mlp or conv generator")
        kinds[name] = fit.model.density_kind()
    if len(set(kinds.values())) > 1:
        raise ValueError(
            f"the fits' likelihoods differ ({kinds}): their log-likelihoods are not densities "
            "of the same data (e.g. the Bernoulli score of grey-level pixels is a cross-entropy, "
            "not a density), so they cannot be compared"
        )


def heldout_pointwise(
    fits: Mapping[str, VarClust],
    heldout_images: ArrayLike | Tensor,
    num_particles: int = 64,
    *,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The per-datum held-out estimates l_i (module docstring) of each fit: name -> (M,)
    float64. Every fit gets the same ``seed`` (the global RNG state is left as it was)."""
    _check_comparable(fits)
    if num_particles < 1:
        raise ValueError(f"num_particles must be at least 1, got {num_particles}")
    pointwise = {}
    for name, fit in fits.items():
        x = fit._prepare(heldout_images, name="heldout_images")
        devices = [x.device] if x.device.type == "cuda" else []
        with evaluating(fit.model, fit.guide), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            draws = importance_draws(fit.model, fit.guide, x, 1, num_particles)
        pointwise[name] = draws.log_likelihood[0].cpu().numpy().astype(np.float64)
    return pointwise


def heldout_table(pointwise: Mapping[str, ArrayLike]) -> pd.DataFrame:
    """The comparison table from per-datum scores (name -> (M,), the same M data for all).

    Returns:
        a DataFrame indexed by fit name, best (highest mean) first, with columns ``rank``
        (0 = best), ``mean`` (L, per datum), ``se``, ``diff`` (L(best) - L(fit), >= 0) and
        ``diff_se`` (from the paired differences; 0 for the best), and ``num_data`` M; the
        definitions are in the module docstring.
    """
    scores = {name: np.asarray(values, dtype=np.float64) for name, values in pointwise.items()}
    sizes = {len(values) for values in scores.values()}
    if len(sizes) != 1 or min(sizes) < 2:
        raise ValueError(f"every fit needs the same number (>= 2) of held-out scores, got "
                         f"{ {name: len(v) for name, v in scores.items()} }")
    (num_data,) = sizes
    means = {name: values.mean() for name, values in scores.items()}
    best = max(means, key=means.get)
    rows = []
    for name, values in scores.items():
        paired = scores[best] - values
        rows.append({
            "name": name,
            "mean": means[name],
            "se": values.std(ddof=1) / np.sqrt(num_data),
            "diff": paired.mean(),
            "diff_se": paired.std(ddof=1) / np.sqrt(num_data),
            "num_data": num_data,
        })
    table = pd.DataFrame(rows).set_index("name").sort_values("mean", ascending=False)
    table.index.name = None
    table.insert(0, "rank", np.arange(len(table)))
    return table


def heldout_log_likelihood(
    fits: Mapping[str, VarClust],
    heldout_images: ArrayLike | Tensor,
    num_particles: int = 64,
    *,
    seed: int = 0,
) -> pd.DataFrame:
    """Rank fits by their held-out importance-weighted log-likelihood per datum.

    Args:
        fits: name -> fitted :class:`~varclust.VarClust`, all with the same likelihood and
            data shape (any priors, guides and K).
        heldout_images: (M, ...) data none of the fits was trained on, floats in [0, 1].
        num_particles: S, importance proposals per datum (cost: S decoder passes per datum
            and fit); raise it until the ranking stops changing (the bound's gap ~ 1 / S).
        seed: seeds the proposals; every fit gets the same seed.

    Returns:
        :func:`heldout_table` of the per-datum estimates (:func:`heldout_pointwise`): ``mean``,
        ``se``, ``diff`` to the best and its paired ``diff_se``, best first.
    """
    return heldout_table(heldout_pointwise(fits, heldout_images, num_particles, seed=seed))
