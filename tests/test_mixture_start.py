"""The mixture's starts after pretraining (``FitConfig.mixture_start``): the codes' own
GaussianMixture, N2D's UMAP start and the merged components."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from ddp_worker import mixture_config, synthetic_mixture
from sklearn.datasets import make_moons
from sklearn.mixture import GaussianMixture

from varclust import FitConfig, VarClust, clustering_scores
from varclust.model.mixture_fit import (
    MIXTURE_STARTS,
    component_overlap,
    component_responsibilities,
    fit_mixture_through_merged_components,
    fit_mixture_through_refined_merge,
    fit_mixture_through_umap,
    merge_components,
    merged_responsibilities,
    mixture_from_responsibilities,
    refine_responsibilities,
)
from varclust.model.priors import GaussianMixturePrior


def test_moments_of_the_responsibilities_match_a_hand_computation():
    codes = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, -1.0]])
    r = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    weights, loc, scale = mixture_from_responsibilities(codes, r, reg_covar=0.0)
    # component 0: weights 1, 0.5 on rows 0, 1; component 1: 0.5, 1 on rows 1, 2
    mean0 = (np.array([0.0, 1.0]) + 0.5 * np.array([2.0, 3.0])) / 1.5
    var0 = (np.array([0.0, 1.0]) ** 2 + 0.5 * np.array([2.0, 3.0]) ** 2) / 1.5 - mean0**2
    mean1 = (0.5 * np.array([2.0, 3.0]) + np.array([4.0, -1.0])) / 1.5
    var1 = (0.5 * np.array([2.0, 3.0]) ** 2 + np.array([4.0, -1.0]) ** 2) / 1.5 - mean1**2
    np.testing.assert_allclose(weights.numpy(), [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(loc.numpy(), np.stack([mean0, mean1]), atol=1e-5)
    np.testing.assert_allclose(scale.numpy(), np.sqrt(np.stack([var0, var1])), atol=1e-5)


def blobs(seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Three elongated clusters in 6 dimensions, 200 points each: (600, 6) codes, labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, (3, 6))
    stretch = np.array([3.0, 0.5, 0.5, 0.5, 0.5, 0.5])
    z = np.concatenate([c + rng.normal(0, 1, (200, 6)) * stretch for c in centres])
    return torch.tensor(z, dtype=torch.float32), np.repeat(np.arange(3), 200)


def test_umap_start_recovers_separated_clusters():
    pytest.importorskip("umap")
    codes, labels = blobs()
    weights, loc, scale = fit_mixture_through_umap(codes, 3, seed=0)
    assert weights.shape == (3,) and loc.shape == (3, 6) and scale.shape == (3, 6)
    assert abs(float(weights.sum()) - 1) < 1e-5 and bool((scale > 0).all())
    log_joint = torch.distributions.Normal(loc, scale).log_prob(codes[:, None]).sum(-1)
    assigned = (log_joint + weights.log()).argmax(-1).numpy()
    assert clustering_scores(labels, assigned)["acc"] >= 0.95
    # random_state fixes UMAP: the same start twice
    again = fit_mixture_through_umap(codes, 3, seed=0)
    torch.testing.assert_close(loc, again[1])
    # numba's pool that does not leave a thread spinning after PyTorch's OpenMP
    assert numba_layer() == "workqueue"


def numba_layer() -> str:
    """The threading layer numba has started (or was told to start)."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel function has run in this process yet
        return numba.config.THREADING_LAYER


def test_umap_start_without_umap_learn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap now raises ImportError
    with pytest.raises(ImportError, match="pip install umap-learn"):
        fit_mixture_through_umap(blobs()[0], 3, seed=0)


def test_umap_start_on_too_few_codes_names_the_fix():
    pytest.importorskip("umap")
    with pytest.raises(ValueError, match="mixture_start='codes'"):
        fit_mixture_through_umap(torch.randn(15, 4), 3, seed=0)


def test_every_start_is_a_config_choice():
    for name in MIXTURE_STARTS:
        FitConfig(mixture_start=name)
    with pytest.raises(ValueError, match="mixture_start"):
        FitConfig(mixture_start="kmeans")


def test_a_fit_starts_from_its_mixture_start_and_records_it(tmp_path, monkeypatch):
    """The wiring: the prior starts at what the configured start returns, and the run folder
    records the start (its quality is measured in benchmarks/, not here)."""
    x, y = synthetic_mixture()

    def spy(codes, num_clusters, seed):
        _, loc, scale = MIXTURE_STARTS["codes"](codes, num_clusters, seed)
        return torch.tensor([0.5, 0.3, 0.2]), loc, scale  # recognisable weights

    monkeypatch.setitem(MIXTURE_STARTS, "umap", spy)
    seen = {}  # the prior's weights when the fit starts (settle_on_codes follows set_mixture)
    monkeypatch.setattr(GaussianMixturePrior, "settle_on_codes", lambda self, codes, seed:
                        seen.update(weights=self.weights.detach().clone()))
    vc = VarClust(**{**mixture_config(), "epochs": 1, "mixture_start": "umap"})
    vc.fit(x, y, out_dir=tmp_path, progress=False)
    torch.testing.assert_close(seen["weights"], torch.tensor([0.5, 0.3, 0.2]))
    again = VarClust.load(tmp_path, device="cpu")
    assert again.config.mixture_start == "umap"


def test_component_overlap_matches_a_hand_computation():
    r = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    overlap = component_overlap(r)
    # columns 0 and 1: dot 0.25, norms sqrt(1.25) and sqrt(0.25); column 2 shares nothing
    np.testing.assert_allclose(overlap, [[1.0, 0.25 / np.sqrt(1.25 * 0.25), 0.0],
                                         [0.25 / np.sqrt(1.25 * 0.25), 1.0, 0.0],
                                         [0.0, 0.0, 1.0]], atol=1e-12)
    # an empty component overlaps nothing and does not divide by zero
    empty = component_overlap(np.array([[1.0, 0.0], [1.0, 0.0]]))
    np.testing.assert_allclose(empty, np.eye(2))


@pytest.mark.parametrize("seed", [0, 1])
def test_merged_components_recover_curved_clusters_one_gaussian_each_cuts(seed):
    """Two interleaved half-moons: a 2-component GaussianMixture cuts them (ACC about 0.85);
    four components merged by their overlap give the moons back."""
    x, y = make_moons(600, noise=0.06, random_state=seed)
    codes = torch.tensor(x * 3, dtype=torch.float32)
    one_each = GaussianMixture(2, covariance_type="full", random_state=seed).fit(x).predict(x)
    assert clustering_scores(y, one_each)["acc"] < 0.9
    merged = merged_responsibilities(codes, 2, seed)
    assert merged.shape == (600, 2)
    np.testing.assert_allclose(merged.sum(1), 1.0, atol=1e-9)
    assert clustering_scores(y, merged.argmax(1))["acc"] >= 0.99
    # the start is the merged clusters' moments, the same for the same seed
    weights, loc, scale = fit_mixture_through_merged_components(codes, 2, seed)
    torch.testing.assert_close(weights, torch.tensor(merged.mean(0), dtype=torch.float32))
    again = fit_mixture_through_merged_components(codes, 2, seed)
    torch.testing.assert_close(loc, again[1])


def test_merged_start_on_too_few_codes_names_the_fix():
    with pytest.raises(ValueError, match="mixture_start='codes'"):
        fit_mixture_through_merged_components(torch.randn(5, 4), 3, seed=0)


@pytest.mark.filterwarnings("ignore:Graph is not fully connected")  # two blocks, as meant
def test_merging_groups_components_that_share_their_data():
    """Components 0 and 2 share the first four data, 1 and 3 the last four: merged into two
    clusters, each datum's two shares add up in one cluster; a consensus of two mixtures (their
    columns side by side, halved) merges the same way."""
    a = np.array([[0.6, 0.0, 0.4, 0.0]] * 4 + [[0.0, 0.7, 0.0, 0.3]] * 4)
    a[0] = [0.9, 0.0, 0.1, 0.0]  # not every datum alike
    merged = merge_components(a, 2, seed=0)
    np.testing.assert_allclose(merged.sum(1), 1.0)
    assert sorted(map(tuple, np.unique(merged, axis=0))) == [(0.0, 1.0), (1.0, 0.0)]
    assert len(set(merged[:4].argmax(1))) == 1 and merged[0].argmax() != merged[4].argmax()
    consensus = merge_components(np.concatenate([a, a[:, ::-1]], 1) / 2, 2, seed=0)
    assert clustering_scores(merged.argmax(1), consensus.argmax(1))["acc"] == 1.0


def test_merged_responsibilities_are_the_merge_of_the_components_responsibilities():
    codes = torch.tensor(make_moons(200, noise=0.06, random_state=0)[0], dtype=torch.float32)
    r = component_responsibilities(codes, 4, seed=3)
    assert r.shape == (200, 4)
    np.testing.assert_allclose(merged_responsibilities(codes, 2, 3), merge_components(r, 2, 3))


def test_refining_moves_a_wrong_partition_to_the_gaussians_em_converges_to():
    """Two tilted, well-separated Gaussians, a quarter of each given to the other at the start:
    EM from the start's moments gives the clusters back, as scikit-learn's own full-covariance
    fit does from k-means, and its responsibilities are that fit's."""
    rng = np.random.default_rng(0)
    tilt = np.array([[2.0, 0.0], [1.5, 0.3]])
    x = np.concatenate([rng.normal(size=(300, 2)) @ tilt, rng.normal(size=(300, 2)) @ tilt + 8])
    y = np.repeat([0, 1], 300)
    wrong = y.copy()
    wrong[:75], wrong[300:375] = 1, 0
    refined = refine_responsibilities(torch.tensor(x), np.eye(2)[wrong], seed=0)
    np.testing.assert_allclose(refined.sum(1), 1.0, atol=1e-9)
    assert clustering_scores(y, refined.argmax(1))["acc"] == 1.0
    reference = GaussianMixture(2, covariance_type="full", reg_covar=1e-4, tol=1e-4,
                                random_state=0).fit(x).predict_proba(x)
    aligned = reference if (reference.argmax(1) == refined.argmax(1)).all() else reference[:, ::-1]
    np.testing.assert_allclose(refined, aligned, atol=1e-4)


def test_refining_an_empty_component_names_the_fix():
    with pytest.raises(ValueError, match=r"components \[1\] hold no data"):
        refine_responsibilities(torch.randn(6, 2), np.eye(2)[[0] * 6], seed=0)


def test_refining_the_merge_of_curved_clusters_gives_one_gaussian_each_back():
    """What the refinement gives up: on two half-moons the merged partition is exact, and EM of
    two Gaussians from it cuts the moons again (the module docstring's caveat); the start is the
    refined clusters' moments."""
    x, y = make_moons(600, noise=0.06, random_state=0)
    codes = torch.tensor(x * 3, dtype=torch.float32)
    merged = merged_responsibilities(codes, 2, 0)
    assert clustering_scores(y, merged.argmax(1))["acc"] >= 0.99
    refined = refine_responsibilities(codes, merged, seed=0)
    assert clustering_scores(y, refined.argmax(1))["acc"] < 0.95
    weights, _, _ = fit_mixture_through_refined_merge(codes, 2, 0)
    torch.testing.assert_close(weights, torch.tensor(refined.mean(0), dtype=torch.float32))
