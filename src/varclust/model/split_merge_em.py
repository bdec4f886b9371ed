"""Split-and-merge EM of a full-covariance Gaussian mixture: a search of its likelihood past the
local maximum that EM stops at.

Ueda, Nakano, Ghahramani & Hinton (2000), "SMEM algorithm for mixture models", Neural
Computation 12(9). EM of K Gaussians converges to a local maximum of the log-likelihood

    L(theta) = 1/N sum_n log sum_k pi_k N(z_n | mu_k, Sigma_k),

and a common one has two components sharing one cluster of the data while a third component
covers two clusters. No EM step moves one component across the space; a *split-and-merge* move
does: merge components i and j into one and split a third, k, into two, which keeps K, then run
EM again from there. The move is kept only if EM from it reaches a higher likelihood, so
L never decreases and the search stops at a maximum that no tried move improves.

The moves, on the mixture's weights pi (K,), means mu (K, D) and covariances Sigma (K, D, D):

- merge (i, j) -> slot i: the moment-matched Gaussian of the pair,
  pi' = pi_i + pi_j,  mu' = (pi_i mu_i + pi_j mu_j) / pi',
  Sigma' = sum_{c in (i, j)} pi_c (Sigma_c + (mu_c - mu')(mu_c - mu')^T) / pi'.
- split k -> slots j and k: two Gaussians of weight pi_k / 2 with Sigma_k, at
  mu_k +- (1/2) sqrt(lambda_1) v_1 (lambda_1, v_1: Sigma_k's largest eigenvalue and its
  eigenvector): the component is cut across its longest axis.

Candidates: the merge criterion of the paper, the overlap of the two components' posteriors
over the data, here as a cosine, J(i, j) = P_i . P_j / (|P_i| |P_j|) with P_k = (p(k | z_n))_n;
the ``merge_pairs`` pairs with the highest J, each with every split k not in (i, j). (The
paper also ranks the splits, by a local Kullback-Leibler divergence that needs a density
estimate; with the few components used here every split is tried instead.) Each candidate is
screened by ``screen_iterations`` EM steps on ``screen_size`` codes, the best two are run to
convergence on ``search_size`` codes, and the first that raises the likelihood is kept. The
search runs on a random subset of the codes for speed; the returned mixture is EM on every code
from the search's result, to convergence.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

__all__ = ["full_covariance_em", "merge_pair", "merge_scores", "split_and_merge_em",
           "split_and_merge_move", "split_component"]


def merge_pair(weights: np.ndarray, means: np.ndarray, covariances: np.ndarray,
               i: int, j: int) -> tuple[float, np.ndarray, np.ndarray]:
    """The moment-matched Gaussian of components i and j of a mixture with weights (K,), means
    (K, D) and covariances (K, D, D): its weight, mean (D,) and covariance (D, D)."""
    weight = weights[i] + weights[j]
    mean = (weights[i] * means[i] + weights[j] * means[j]) / weight
    covariance = sum(weights[c] * (covariances[c] + np.outer(means[c] - mean, means[c] - mean))
                     for c in (i, j)) / weight
    return weight, mean, covariance


def split_component(weight: float, mean: np.ndarray, covariance: np.ndarray
                    ) -> tuple[float, np.ndarray, np.ndarray]:
    """One Gaussian (weight, mean (D,), covariance (D, D)) cut across its longest axis: the
    weight of each half and the halves' means (2, D); both keep the covariance."""
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    step = 0.5 * np.sqrt(eigenvalues[-1]) * eigenvectors[:, -1]
    return weight / 2, np.stack([mean + step, mean - step])


def split_and_merge_move(gmm: GaussianMixture, i: int, j: int, k: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fitted full-covariance mixture with i and j merged into slot i and k split into slots
    j and k: weights (K,), means (K, D), covariances (K, D, D)."""
    if len({i, j, k}) != 3:
        raise ValueError(f"split_and_merge_move: merge {i}, {j} and split {k} must be three "
                         "different components")
    weights, means, covariances = gmm.weights_.copy(), gmm.means_.copy(), gmm.covariances_.copy()
    half, halves = split_component(weights[k], means[k], covariances[k])
    weights[i], means[i], covariances[i] = merge_pair(gmm.weights_, gmm.means_,
                                                      gmm.covariances_, i, j)
    weights[j], means[j], covariances[j] = half, halves[0], gmm.covariances_[k]
    weights[k], means[k] = half, halves[1]
    return weights, means, covariances


def merge_scores(responsibilities: np.ndarray) -> np.ndarray:
    """The merge criterion J (K, K): the cosine between components' posterior vectors, the
    columns of responsibilities (N, K)."""
    norms = np.linalg.norm(responsibilities, axis=0)
    return responsibilities.T @ responsibilities / np.outer(norms, norms)


def full_covariance_em(codes: np.ndarray, weights: np.ndarray, means: np.ndarray,
                       covariances: np.ndarray, max_iter: int, seed: int,
                       reg_covar: float = 1e-4) -> GaussianMixture:
    """EM of a full-covariance GaussianMixture (scikit-learn) on codes (N, D), started at weights
    (K,; normalised here), means (K, D) and covariances (K, D, D) (reg_covar added), run to
    tolerance 1e-4 or max_iter steps (a fit stopped there is returned without a warning)."""
    precisions = np.linalg.inv(covariances + reg_covar * np.eye(codes.shape[1]))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        return GaussianMixture(len(weights), covariance_type="full",
                               weights_init=weights / weights.sum(), means_init=means,
                               precisions_init=precisions, max_iter=max_iter, tol=1e-4,
                               reg_covar=reg_covar, random_state=seed).fit(codes)


def split_and_merge_em(codes: np.ndarray, gmm: GaussianMixture, seed: int, *,
                       merge_pairs: int = 12, search_size: int = 10_000, screen_size: int = 3_000,
                       screen_iterations: int = 15, max_moves: int = 20,
                       reg_covar: float = 1e-4) -> GaussianMixture:
    """Split-and-merge EM (module docstring) of a fitted full-covariance mixture on codes (N, D).

    Args:
        gmm: a fitted ``GaussianMixture(covariance_type="full")`` with at least 3 components.
        seed: seeds the subsets and scikit-learn.
        merge_pairs: how many of the most overlapping pairs are tried as merges per move.
        search_size, screen_size: the codes the search runs on and the first of them that
            screen the candidates (the search uses every code where N is smaller).
        screen_iterations: EM steps that screen a candidate.
        max_moves: the most moves kept.
    Returns:
        The mixture after the search and EM on every code to convergence (at most 500 steps);
        its likelihood on the search's subset is at least the start's after EM there.
    """
    if gmm.covariance_type != "full" or gmm.n_components < 3:
        raise ValueError("split_and_merge_em: needs a fitted full-covariance GaussianMixture "
                         f"with at least 3 components (got {gmm.covariance_type!r}, "
                         f"{gmm.n_components}); fit GaussianMixture(K, covariance_type='full')")
    rng = np.random.default_rng(seed)
    subset = codes[rng.choice(len(codes), min(search_size, len(codes)), replace=False)]
    screen = subset[:screen_size]
    current = full_covariance_em(subset, gmm.weights_, gmm.means_, gmm.covariances_, 300, seed,
                                 reg_covar)
    best = current.score(subset)
    for _ in range(max_moves):
        scores = merge_scores(current.predict_proba(subset))
        pairs = sorted(zip(*np.triu_indices(len(scores), 1)), key=lambda p: -scores[p])
        screened = []
        for i, j in pairs[:merge_pairs]:
            for k in range(len(scores)):
                if k not in (i, j):
                    moved = full_covariance_em(screen, *split_and_merge_move(current, i, j, k),
                                screen_iterations, seed, reg_covar)
                    screened.append((moved.score(screen), moved))
        screened.sort(key=lambda scored: -scored[0])
        for _, moved in screened[:2]:
            candidate = full_covariance_em(subset, moved.weights_, moved.means_,
                                           moved.covariances_, 300, seed, reg_covar)
            likelihood = candidate.score(subset)
            if likelihood > best + 1e-4:
                current, best = candidate, likelihood
                break
        else:
            break
    return full_covariance_em(codes, current.weights_, current.means_, current.covariances_, 500,
                              seed, reg_covar)
