"""Split-and-merge EM (``varclust.model.split_merge_em``) and the ``split-merge`` start."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from varclust import clustering_scores
from varclust.model.mixture_fit import MIXTURE_STARTS, fit_mixture_through_split_merge
from varclust.model.split_merge_em import (
    merge_pair,
    merge_scores,
    split_and_merge_em,
    split_and_merge_move,
    split_component,
)


def test_a_merge_is_the_pairs_moments_by_hand():
    weights = np.array([0.2, 0.6])
    means = np.array([[0.0, 0.0], [4.0, 2.0]])
    covariances = np.stack([np.eye(2), np.diag([2.0, 0.5])])
    weight, mean, covariance = merge_pair(weights, means, covariances, 0, 1)
    # pi' = 0.8; mu' = (0.2 * 0 + 0.6 * (4, 2)) / 0.8 = (3, 1.5)
    # Sigma' = [0.2 (I + (3, 1.5)(3, 1.5)^T) + 0.6 (diag(2, .5) + (1, .5)(1, .5)^T)] / 0.8
    assert weight == pytest.approx(0.8)
    np.testing.assert_allclose(mean, [3.0, 1.5])
    by_hand = (0.2 * (np.eye(2) + np.array([[9.0, 4.5], [4.5, 2.25]]))
               + 0.6 * (np.diag([2.0, 0.5]) + np.array([[1.0, 0.5], [0.5, 0.25]]))) / 0.8
    np.testing.assert_allclose(covariance, by_hand)
    # the moments of the two-component mixture itself, from draws
    rng = np.random.default_rng(0)
    which = rng.random(200_000) < 0.25
    draws = np.where(which[:, None], rng.normal(size=(200_000, 2)),
                     rng.normal(size=(200_000, 2)) * np.sqrt([2.0, 0.5]) + [4.0, 2.0])
    np.testing.assert_allclose(np.cov(draws.T), covariance, atol=0.05)


def test_a_split_cuts_across_the_longest_axis():
    weight, halves = split_component(0.4, np.array([1.0, -1.0]), np.diag([1.0, 4.0]))
    assert weight == pytest.approx(0.2)
    # the longest axis is the second, sd 2: the halves sit 0.5 * 2 = 1 either side of the mean
    np.testing.assert_allclose(sorted(halves[:, 1]), [-2.0, 0.0])
    np.testing.assert_allclose(halves[:, 0], [1.0, 1.0])


def test_a_move_merges_into_the_first_slot_and_splits_into_the_other_two():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 1, (100, 2)) for c in (0, 6, 12)])
    gmm = GaussianMixture(3, covariance_type="full", random_state=0).fit(x)
    weights, means, covariances = split_and_merge_move(gmm, 2, 0, 1)
    w, m, c = merge_pair(gmm.weights_, gmm.means_, gmm.covariances_, 2, 0)
    assert weights[2] == pytest.approx(w)
    np.testing.assert_allclose(means[2], m)
    np.testing.assert_allclose(covariances[2], c)
    np.testing.assert_allclose(weights[[0, 1]], gmm.weights_[1] / 2)
    np.testing.assert_allclose(means[[0, 1]].mean(0), gmm.means_[1])
    np.testing.assert_allclose(covariances[[0, 1]], gmm.covariances_[[1, 1]])
    assert weights.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="three different components"):
        split_and_merge_move(gmm, 0, 1, 1)


def test_the_merge_criterion_is_highest_for_components_sharing_their_data():
    r = np.array([[0.5, 0.5, 0.0], [0.4, 0.6, 0.0], [0.0, 0.1, 0.9], [0.0, 0.0, 1.0]])
    scores = merge_scores(r)
    np.testing.assert_allclose(np.diag(scores), 1.0)
    assert scores[0, 1] > scores[1, 2] > scores[0, 2] == 0.0


def three_clusters() -> tuple[np.ndarray, np.ndarray]:
    """Three separated Gaussian clusters in 2 dimensions, 300 points each: (900, 2), labels."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]])
    x = np.concatenate([c + rng.normal(size=(300, 2)) for c in centres])
    return x, np.repeat(np.arange(3), 300)


def stuck_mixture(x: np.ndarray) -> GaussianMixture:
    """EM converged from two components in the first cluster and one over the other two."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        return GaussianMixture(3, covariance_type="full", weights_init=[1 / 6, 1 / 6, 2 / 3],
                               means_init=[[-0.5, 0.0], [0.5, 0.0], [10.0, 5.0]], max_iter=500,
                               tol=1e-6, random_state=0).fit(x)


def test_split_and_merge_leaves_the_local_maximum_em_stops_at():
    """The paper's case: EM with two components in one cluster and one over two is at a local
    maximum (the test checks it is stuck there); the search moves one component across and
    recovers the clusters at a higher likelihood."""
    x, y = three_clusters()
    stuck = stuck_mixture(x)
    assert clustering_scores(y, stuck.predict(x))["acc"] < 0.6  # stuck, not a trivial start
    searched = split_and_merge_em(x, stuck, seed=0)
    assert clustering_scores(y, searched.predict(x))["acc"] == 1.0
    assert searched.score(x) > stuck.score(x) + 0.5
    found = GaussianMixture(3, covariance_type="full", n_init=5, random_state=0).fit(x)
    assert searched.score(x) == pytest.approx(found.score(x), abs=1e-3)


def test_split_and_merge_keeps_a_maximum_no_move_improves():
    x, y = three_clusters()
    good = GaussianMixture(3, covariance_type="full", reg_covar=1e-4, random_state=0).fit(x)
    searched = split_and_merge_em(x, good, seed=0)
    assert searched.score(x) >= good.score(x) - 1e-4
    np.testing.assert_allclose(np.sort(searched.weights_), np.sort(good.weights_), atol=1e-3)


def test_split_and_merge_needs_a_full_covariance_mixture_of_three():
    x, _ = three_clusters()
    with pytest.raises(ValueError, match="full-covariance GaussianMixture with at least 3"):
        split_and_merge_em(x, GaussianMixture(3, covariance_type="diag").fit(x), seed=0)
    with pytest.raises(ValueError, match="at least 3 components"):
        split_and_merge_em(x, GaussianMixture(2, covariance_type="full").fit(x), seed=0)


def test_the_split_merge_start_is_a_start_and_gives_the_clusters():
    x, y = three_clusters()
    assert MIXTURE_STARTS["split-merge"] is fit_mixture_through_split_merge
    weights, loc, scale = fit_mixture_through_split_merge(torch.tensor(x), 3, seed=0)
    assert weights.shape == (3,) and loc.shape == (3, 2) and scale.shape == (3, 2)
    assert weights.dtype == torch.float32 and bool((scale > 0).all())
    log_joint = torch.distributions.Normal(loc, scale).log_prob(
        torch.tensor(x, dtype=torch.float32)[:, None]).sum(-1) + weights.log()
    assert clustering_scores(y, log_joint.argmax(1).numpy())["acc"] == 1.0
