"""How :func:`varclust.restarts.fit_restarts` ranks its candidates: label-free criteria.

A criterion gives each of R fitted candidates a score, higher is better; the highest is kept.
None reads a label.

``elbo`` (:class:`ElboCriterion`): the mean ELBO per datum on the fitted data, as scikit-learn's
``GaussianMixture(n_init=...)`` keeps its best initialisation by likelihood. It ranks fits when
the bound is what separates them; with terms outside the ELBO in the loss (``--recipe scratch``)
it ranks them unevenly (BENCHMARKS.md, issue 12: Spearman with ACC 0.06 over 25 digits fits,
0.66 over 16 others, 0.12 over 10 Fashion-MNIST fits).

``agreement`` (:class:`AgreementCriterion`): candidate r's mean adjusted Rand index with the
other candidates' partitions of the data,

    agreement_r = 1 / (R - 1) sum_{s != r} ARI(partition_r, partition_s),

so the kept fit is the medoid of the R partitions under the ARI (the consensus choice of
clustering ensembles; Strehl & Ghosh 2002 use the mutual information). The idea: fits that
find the data's structure find the same partition, while the local optima they miss it in are
each bad in their own way. It needs R >= 3 (two candidates agree equally with each other).
The partitions are the fits' ``predict(X).labels`` (N,), the data's most probable clusters.

``confidence`` (:class:`ConfidenceCriterion`): minus the mean entropy of the fit's cluster
posterior over the data, -1/N sum_n H[p(c | x_n)] (``predict(X).entropy``): the fit whose
assignments are the most decided is kept. A fit that leaves two classes in one component, or
splits one over two, leaves the data between them undecided.

``neighbours`` (:class:`NeighbourCriterion`): how often a datum and one of its k = 10 nearest
neighbours in the data themselves (Euclidean, after a projection on 50 principal components:
:func:`varclust.inference.regularisers.nearest_neighbours`) fall in the same predicted cluster,
corrected for chance as Cohen's kappa is:

    a = 1 / (N k) sum_n sum_{j in NN_k(n)} [c_n = c_j],    e = sum_c p_c^2,
    neighbours = (a - e) / (1 - e),

with c_n the fit's predicted cluster of datum n and p_c the fraction of the data predicted in
cluster c; e is a's expectation for a partition of those sizes drawn at random, so lumping the
data into a few large clusters does not raise the score (one cluster scores 0). It is the
cluster assumption of semi-supervised learning read as a score (boundaries between clusters
should run where the data are sparse), the same assumption the virtual adversarial and neighbour
terms train (:mod:`varclust.inference.regularisers`); here nothing is trained, the partitions
are compared against a neighbourhood that no fit chose.

Measured against the fits' ACC under ``--recipe scratch`` (BENCHMARKS.md, issue 12, "Choosing
among fits without the labels"), Spearman over 16 digits / 10 Fashion-MNIST fits: elbo +0.66 /
+0.12, agreement +0.82 / +0.41, confidence (as minus the entropy) +0.57 / +0.62. None is best
on both data sets, so ``elbo`` stays the default. ``neighbours`` (another machine, BENCHMARKS.md
"keeping the restart whose clusters keep pixel-space neighbours together"): on Fashion-MNIST
Spearman +0.45 over 25 fits (the ELBO's -0.13 on them), and ``--restarts 5 --select-by
neighbours`` kept ACC 0.618 +- 0.027 over 5 ensembles against 0.586 +- 0.045 for the 25 single
fits (+0.031 over each ensemble's mean, p 0.03); on the UCI digits Spearman +0.65 (the ELBO's
+0.21) and 0.884 +- 0.036 against 0.851 +- 0.039 (+0.033, p 0.11).
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np
import pyro
import torch
from sklearn.metrics import adjusted_rand_score

from .inference.regularisers import nearest_neighbours

if TYPE_CHECKING:
    from .estimator import VarClust

__all__ = ["SELECTION_CRITERIA", "AgreementCriterion", "ConfidenceCriterion", "ElboCriterion",
           "NeighbourCriterion", "SelectionCriterion", "agreement_matrix", "agreement_scores",
           "neighbour_agreement", "score_by_elbo", "selection_criterion"]


def score_by_elbo(fit: VarClust, X: Any, draws: int = 3, seed: int = 0) -> float:
    """The mean ELBO per datum of data X (N, ...) under a fitted ``fit``, averaged over
    ``draws`` passes from the random seed ``seed`` (the same noise for every fit scored)."""
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    pyro.set_rng_seed(seed)
    return float(np.mean([fit.score(X) for _ in range(draws)]))


def agreement_matrix(partitions: list[np.ndarray]) -> np.ndarray:
    """The (R, R) adjusted Rand indices between R partitions (N,) of the same data (ones on
    the diagonal)."""
    ari = np.eye(len(partitions))
    for r, s in itertools.combinations(range(len(partitions)), 2):
        ari[r, s] = ari[s, r] = adjusted_rand_score(partitions[r], partitions[s])
    return ari


def agreement_scores(ari: np.ndarray) -> list[float]:
    """Each of R >= 2 partitions' mean adjusted Rand index with the other R - 1, from their
    (R, R) :func:`agreement_matrix` (or a block of it: the agreement within a subset)."""
    if len(ari) < 2:
        raise ValueError(f"agreement compares partitions: give at least 2, got {len(ari)}")
    return [float((row.sum() - 1.0) / (len(ari) - 1)) for row in ari]


def neighbour_agreement(labels: np.ndarray, neighbours: np.ndarray) -> float:
    """Chance-corrected agreement of a partition with a neighbour table (module docstring):
    labels (N,) the predicted clusters, neighbours (N, k) each datum's neighbours' indices;
    (a - e) / (1 - e), between -1 and 1, 0 for a single cluster."""
    labels = np.asarray(labels)
    neighbours = np.asarray(neighbours)
    if neighbours.ndim != 2 or len(neighbours) != len(labels):
        raise ValueError(f"neighbours must be (N, k) for N = {len(labels)} labels, got shape "
                         f"{neighbours.shape}")
    observed = float((labels[neighbours] == labels[:, None]).mean())
    sizes = np.unique(labels, return_counts=True)[1] / len(labels)
    expected = float((sizes ** 2).sum())
    if expected >= 1.0:
        return 0.0
    return (observed - expected) / (1.0 - expected)


class SelectionCriterion(ABC):
    """A label-free score for each of R fitted candidates; the highest is kept."""

    name: str
    kept: str  # which candidate is kept, in words
    min_candidates: int = 1
    #: whether a candidate's score depends on that fit alone (not on the other candidates), so
    #: that the scores of a pool of fits hold for every subset of it
    per_fit: bool = True

    @abstractmethod
    def scores(self, fits: list[VarClust], X: Any, elbos: list[float]) -> list[float]:
        """One score per fit (higher is better), from the fits, the data X (N, ...) and each
        fit's mean ELBO per datum ``elbos`` (R,), which every candidate record holds."""

    @abstractmethod
    def describe(self, draws: int) -> str:
        """What the score is, for ``restarts.json`` (``draws``: the ELBO's passes)."""

    def score_text(self, score: float) -> str:
        """The score as a candidate's line shows it beside its ELBO ('' if it is the ELBO)."""
        return f", {self.name} {score:.3f}"


class ElboCriterion(SelectionCriterion):
    """The candidates' mean ELBO per datum on the fitted data (module docstring)."""

    name = "elbo"
    kept = "the highest ELBO"

    def scores(self, fits: list[VarClust], X: Any, elbos: list[float]) -> list[float]:
        return list(elbos)

    def describe(self, draws: int) -> str:
        return f"mean ELBO per datum on the fitted data, {draws} draws"

    def score_text(self, score: float) -> str:
        return ""


class AgreementCriterion(SelectionCriterion):
    """The candidates' mean ARI with the others' partitions: the medoid is kept (module
    docstring)."""

    name = "agreement"
    kept = "the fit whose clusters agree most with the others'"
    min_candidates = 3
    per_fit = False

    def scores(self, fits: list[VarClust], X: Any, elbos: list[float]) -> list[float]:
        return agreement_scores(agreement_matrix([np.asarray(fit.predict(X).labels)
                                                  for fit in fits]))

    def describe(self, draws: int) -> str:
        return ("mean adjusted Rand index of the candidate's partition of the fitted data with "
                "the other candidates' (the medoid is kept)")


class ConfidenceCriterion(SelectionCriterion):
    """Minus the candidates' mean entropy of p(c | x) over the data: the most decided
    assignments are kept (module docstring)."""

    name = "confidence"
    kept = "the fit with the most decided cluster assignments"

    def scores(self, fits: list[VarClust], X: Any, elbos: list[float]) -> list[float]:
        return [-float(np.mean(fit.predict(X).entropy)) for fit in fits]

    def describe(self, draws: int) -> str:
        return "minus the mean entropy in nats of the candidate's p(c | x) over the fitted data"


class NeighbourCriterion(SelectionCriterion):
    """How often the data's nearest neighbours share a candidate's predicted cluster, corrected
    for chance (module docstring): the fit whose clusters keep neighbourhoods whole is kept.

    Args:
        neighbours: k, the neighbours of each datum compared (found once for all candidates).
    """

    name = "neighbours"
    kept = "the fit whose clusters keep the data's nearest neighbours together most"

    def __init__(self, neighbours: int = 10) -> None:
        self.neighbours = neighbours

    def scores(self, fits: list[VarClust], X: Any, elbos: list[float]) -> list[float]:
        data = X if isinstance(X, torch.Tensor) else torch.as_tensor(np.asarray(X))
        table = nearest_neighbours(data, self.neighbours).cpu().numpy()
        return [neighbour_agreement(np.asarray(fit.predict(X).labels), table) for fit in fits]

    def describe(self, draws: int) -> str:
        return (f"chance-corrected share of the data's {self.neighbours} nearest neighbours "
                "(Euclidean, 50 principal components) in the candidate's predicted cluster")


SELECTION_CRITERIA: dict[str, SelectionCriterion] = {
    c.name: c for c in (ElboCriterion(), AgreementCriterion(), ConfidenceCriterion(),
                        NeighbourCriterion())}


def selection_criterion(name: str, restarts: int) -> SelectionCriterion:
    """The criterion called ``name``, checked against the number of candidates."""
    if name not in SELECTION_CRITERIA:
        raise ValueError(f"unknown selection criterion {name!r}; choose one of "
                         f"{', '.join(SELECTION_CRITERIA)}")
    criterion = SELECTION_CRITERIA[name]
    if restarts < criterion.min_candidates:
        raise ValueError(f"select_by (--select-by) {name!r} needs at least "
                         f"{criterion.min_candidates} restarts (--restarts), got {restarts}; "
                         "give more restarts or choose by 'elbo'")
    return criterion
