"""ArviZ InferenceData of a fit: groups, dims, shapes, the importance estimate, NetCDF, LOO ranking,
and every analysis plot."""

import math
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from PIL import Image
from sklearn.datasets import make_blobs

from varclust import VarClust
from varclust.analysis import (
    PointEstimateWarning,
    heldout_log_likelihood,
    heldout_pointwise,
    plot_cluster_samples,
    plot_compare,
    plot_confusion_matrix,
    plot_entropy_histogram,
    plot_heldout,
    plot_latent_map,
    plot_training_curve,
    to_inference_data,
)
from varclust.analysis.importance import importance_draws

torch.set_num_threads(1)

TRUE_K = 4


def blob_images(num_data: int = 800, dim: int = 16, seed: int = 0,
                sample_seed: int | None = None):
    """Four well separated 2-D blobs (scikit-learn's make_blobs, centres on a circle of radius 4,
    spread 0.3) through a fixed random tanh layer and a sigmoid to ``dim`` grey levels, plus a
    little noise, clipped to [0, 1]. ``seed`` fixes the layer; ``sample_seed`` (default
    ``seed``) the blobs' points and the noise, so other sample seeds give new data of the same
    distribution (held-out data)."""
    sample_seed = seed if sample_seed is None else sample_seed
    angles = np.arange(TRUE_K) * 2 * np.pi / TRUE_K
    centres = 4 * np.stack([np.cos(angles), np.sin(angles)], 1)
    codes, y = make_blobs(num_data, n_features=2, centers=centres, cluster_std=0.3,
                          random_state=sample_seed)
    rng = np.random.default_rng(seed)
    hidden = np.tanh(codes @ rng.normal(size=(2, 32)) + rng.normal(size=32))
    x = 1 / (1 + np.exp(-(hidden @ rng.normal(size=(32, dim)) + rng.normal(size=dim))))
    noise = rng.normal(size=x.shape) if sample_seed == seed else (
        np.random.default_rng([seed, sample_seed]).normal(size=x.shape))
    x = np.clip(x + 0.05 * noise, 0, 1).astype(np.float32)
    return x, y


def small_fit(x, num_clusters: int) -> VarClust:
    vc = VarClust(num_clusters, latent_dim=2, hidden=(32, 32), epochs=15, pretrain_epochs=15,
                  batch_size=64, likelihood="gaussian", seed=1, device="cpu")
    return vc.fit(x, progress=False)


@pytest.fixture(scope="module")
def blobs():
    return blob_images(seed=1)


@pytest.fixture(scope="module")
def fits(blobs):
    """The true K and a misspecified K=2, fitted to the same data."""
    x, _ = blobs
    return {"K=4 (true)": small_fit(x, TRUE_K), "K=2": small_fit(x, 2)}


@pytest.fixture(scope="module")
def idatas(fits, blobs):
    x, y = blobs
    with pytest.warns(PointEstimateWarning, match="not a posterior"):
        return {name: to_inference_data(vc, x, 30, importance_samples=8, labels=y, seed=1)
                for name, vc in fits.items()}


@pytest.fixture(scope="module")
def heldout():
    """400 new data of the same distribution as ``blobs`` (same map, other points)."""
    return blob_images(400, seed=1, sample_seed=7)


def test_groups_dims_and_shapes(idatas, fits, blobs):
    x, y = blobs
    idata = idatas["K=4 (true)"]
    vc = fits["K=4 (true)"]
    n, r, k, d = len(x), 30, TRUE_K, 2
    assert set(idata.groups()) == {"posterior", "log_likelihood", "sample_stats",
                                   "observed_data", "posterior_predictive", "constant_data"}
    expected = {
        ("posterior", "z"): (("chain", "draw", "datum", "latent"), (1, r, n, d)),
        ("posterior", "responsibilities"): (("chain", "draw", "datum", "cluster"), (1, r, n, k)),
        ("posterior", "mixture_weights"): (("chain", "draw", "cluster"), (1, r, k)),
        ("posterior", "mixture_loc"): (("chain", "draw", "cluster", "latent"), (1, r, k, d)),
        ("posterior", "mixture_scale"): (("chain", "draw", "cluster", "latent"), (1, r, k, d)),
        ("log_likelihood", "x"): (("chain", "draw", "datum"), (1, r, n)),
        ("sample_stats", "assignment_entropy"): (("chain", "draw", "datum"), (1, r, n)),
        ("sample_stats", "elbo"): (("epoch",), (15,)),
        ("observed_data", "x"): (("datum", "feature"), (n, 16)),
        ("posterior_predictive", "reconstruction"): (("chain", "draw", "datum", "feature"),
                                                     (1, 4, n, 16)),
        ("constant_data", "label"): (("datum",), (n,)),
    }
    for (group, var), (dims, shape) in expected.items():
        array = getattr(idata, group)[var]
        assert array.dims == dims, (group, var)
        assert array.shape == shape, (group, var)
    resp = idata.posterior["responsibilities"].values
    np.testing.assert_allclose(resp.sum(-1), 1.0, atol=1e-5)
    entropy = idata.sample_stats["assignment_entropy"].values
    assert (entropy >= -1e-6).all() and (entropy <= math.log(k) + 1e-5).all()
    np.testing.assert_allclose(idata.sample_stats["elbo"].values, [h["elbo"] for h in vc.history])
    np.testing.assert_allclose(idata.observed_data["x"].values, x)
    np.testing.assert_array_equal(idata.constant_data["label"].values, y)
    np.testing.assert_allclose(idata.posterior["mixture_weights"].values[0, 7],
                               vc.model.prior.weights.detach().numpy(), rtol=1e-6)
    assert np.isfinite(idata.log_likelihood["x"].values).all()
    # the resampled codes sit where the guide puts them: near the encoder's means
    np.testing.assert_allclose(idata.posterior["z"].values[0].mean(0), vc.encode(x), atol=0.5)


def test_importance_estimate_equals_hand_computed_iwae(fits, blobs):
    """Same proposals (same seed), computed by hand from q, the mixture and the likelihood."""
    x = torch.from_numpy(blobs[0][:50])
    vc = fits["K=4 (true)"]
    num = 200
    pyro.set_rng_seed(3)
    draws = importance_draws(vc.model, vc.guide, x, 1, num)
    pyro.set_rng_seed(3)
    with torch.no_grad():
        loc, scale = vc.guide.encode(x)
        q = dist.Normal(loc, scale).to_event(1)
        z = q.sample((num,))
        log_p = (vc.model.prior.log_joint(z).logsumexp(-1)
                 + vc.model.likelihood(vc.model.decoder(z), 1).log_prob(x))
        by_hand = (log_p - q.log_prob(z)).logsumexp(0) - math.log(num)
        resp = vc.model.prior.log_joint(draws.z[0]).softmax(-1)
    np.testing.assert_allclose(draws.log_likelihood[0].numpy(), by_hand.numpy(), rtol=1e-5)
    np.testing.assert_allclose(draws.responsibilities[0].numpy(), resp.numpy(), atol=1e-5)


def test_netcdf_round_trip(idatas, tmp_path):
    idata = idatas["K=2"]
    path = tmp_path / "fit.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    assert set(back.groups()) == set(idata.groups())
    for group in idata.groups():
        original, loaded = getattr(idata, group), getattr(back, group)
        assert set(loaded.data_vars) == set(original.data_vars)
        for var in original.data_vars:
            assert loaded[var].dims == original[var].dims
            np.testing.assert_array_equal(loaded[var].values, original[var].values)


def test_loo_and_compare_rank_the_true_k_first(idatas):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto-k warnings: see the caveat in the module
        loos = {name: az.loo(idata) for name, idata in idatas.items()}
        waic = az.waic(idatas["K=2"])
        table = az.compare(idatas)
    assert all(np.isfinite(loo.elpd_loo) for loo in loos.values())
    assert np.isfinite(waic.elpd_waic)
    assert table.index[0] == "K=4 (true)"
    worse = table.loc["K=2"]
    # not a coin toss: the gap is many standard errors wide
    assert worse["elpd_diff"] > 4 * worse["dse"]


def test_point_estimate_fits_say_what_their_draws_are(idatas):
    idata = idatas["K=2"]
    assert idata.attrs["draws"] == "point estimate"
    assert "NOT posterior draws" in idata.attrs["log_likelihood"]


def test_heldout_log_likelihood_ranks_the_true_k_first(fits, heldout, tmp_path):
    """On new data of the same distribution, the K=4 fit predicts better than K=2 by many
    paired standard errors; every per-datum estimate is finite; same seed, same numbers."""
    x_new, _ = heldout
    table = heldout_log_likelihood(fits, x_new, num_particles=32)
    assert list(table.columns) == ["rank", "mean", "se", "diff", "diff_se", "num_data"]
    assert np.isfinite(table[["mean", "se", "diff", "diff_se"]].values).all()
    assert table.index[0] == "K=4 (true)"
    assert table.loc["K=4 (true)", "diff"] == 0 and table.loc["K=4 (true)", "diff_se"] == 0
    worse = table.loc["K=2"]
    assert worse["diff"] > 4 * worse["diff_se"]
    # the paired se is the narrower one: the fits agree on which data are hard
    assert worse["diff_se"] < np.hypot(worse["se"], table.loc["K=4 (true)", "se"])
    pointwise = heldout_pointwise(fits, x_new, num_particles=32)
    assert all(v.shape == (400,) and np.isfinite(v).all() for v in pointwise.values())
    np.testing.assert_allclose(pointwise["K=2"].mean(), worse["mean"])
    plot_heldout(table, tmp_path / "heldout.png", title="held-out blobs")
    _assert_png(tmp_path / "heldout.png")


def test_heldout_refuses_fits_of_different_likelihoods(fits, blobs):
    x, _ = blobs
    bernoulli = VarClust(2, latent_dim=2, hidden=(8,), epochs=1, pretrain_epochs=1,
                         batch_size=64, likelihood="bernoulli", seed=0, device="cpu")
    bernoulli.fit(x[:100], progress=False)
    with pytest.raises(ValueError, match="likelihoods differ"):
        heldout_log_likelihood({"gaussian": fits["K=2"], "bernoulli": bernoulli}, x[:10])
    with pytest.raises(ValueError, match="num_particles"):
        heldout_log_likelihood({"gaussian": fits["K=2"]}, x[:10], num_particles=0)


def test_bad_arguments_are_refused(fits, blobs):
    x, _ = blobs
    vc = fits["K=2"]
    with pytest.raises(ValueError, match="num_samples must be at least 2"):
        to_inference_data(vc, x, 1)
    with pytest.raises(ValueError, match="labels must have shape"):
        to_inference_data(vc, x, 4, labels=np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="num_reconstructions"):
        to_inference_data(vc, x, 4, num_reconstructions=5)
    with pytest.raises(RuntimeError, match="not fitted"):
        to_inference_data(VarClust(3), x, 4)


def _assert_png(path):
    assert path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 100 and image.size[1] > 100


def test_every_plot_writes_a_png(fits, idatas, blobs, tmp_path):
    x, y = blobs
    vc = fits["K=4 (true)"]
    pred = vc.predict(x)
    plot_cluster_samples([vc.sample(k, 4) for k in range(TRUE_K)], tmp_path / "samples.png")
    plot_training_curve(vc.history, tmp_path / "training.png", vc.pretrain_losses)
    plot_latent_map(vc.encode(x), pred.labels, tmp_path / "map_pca.png", labels=y)
    codes_3d = np.concatenate([vc.encode(x), pred.responsibilities[:, :1]], axis=1)
    plot_latent_map(codes_3d[:120], pred.labels[:120], tmp_path / "map_tsne.png", method="tsne")
    plot_confusion_matrix(y, pred.labels, tmp_path / "confusion.png")
    plot_entropy_histogram(pred.entropy, TRUE_K, tmp_path / "entropy.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plot_compare(az.compare(idatas), tmp_path / "compare.png", title="LOO")
    for name in ("samples", "training", "map_pca", "map_tsne", "confusion", "entropy",
                 "compare"):
        _assert_png(tmp_path / f"{name}.png")
    with pytest.raises(ValueError, match="method must be"):
        plot_latent_map(codes_3d, pred.labels, tmp_path / "bad.png", method="umap")


@pytest.mark.parametrize("swap", [{"guide": "mixture"}, {"prior": "bayes-gmm"}, {"prior": "dp"}],
                         ids=["mixture-guide", "bayes-gmm-prior", "dp-prior"])
def test_swapped_guide_and_prior(swap, blobs):
    """The mixture guide samples the cluster (the model replays it); the bayes-gmm prior's
    parameters are random sites with a global guide: both give finite estimates, normalised
    responsibilities, and the mixture's point estimates in the posterior."""
    x, y = blobs
    x, y = x[:300], y[:300]
    vc = VarClust(TRUE_K, latent_dim=2, hidden=(32, 32), epochs=5, pretrain_epochs=10,
                  batch_size=64, likelihood="gaussian", seed=1, device="cpu", **swap)
    vc.fit(x, progress=False)
    idata = to_inference_data(vc, x, 6, importance_samples=4, labels=y, seed=0)
    log_lik = idata.log_likelihood["x"].values
    assert log_lik.shape == (1, 6, len(x)) and np.isfinite(log_lik).all()
    resp = idata.posterior["responsibilities"].values
    np.testing.assert_allclose(resp.sum(-1), 1.0, atol=1e-5)
    weights = idata.posterior["mixture_weights"].values
    assert weights.shape == (1, 6, TRUE_K)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-4)
    assert idata.posterior["mixture_scale"].values.shape == (1, 6, TRUE_K, 2)
    point = vc.model.prior.point_parameters()
    if swap.get("prior") == "dp":  # a posterior over the globals: draws from it (test_posterior)
        assert idata.attrs["draws"] == "posterior"
    else:  # point estimates, repeated over the draws
        assert idata.attrs["draws"] == "point estimate"
        np.testing.assert_allclose(idata.posterior["mixture_loc"].values[0, 0],
                                   point["loc"].detach().numpy(), rtol=1e-6)


def test_normal_prior_responsibilities_are_the_fitted_mixture(blobs):
    """A plain VAE (``prior="normal"``) clusters by the mixture fitted to its codes; its
    enumerated cluster does not touch z, so reading p(c | z) off the model gave 1/K for every
    datum. The InferenceData's responsibilities follow the fitted mixture, as ``predict``."""
    x, _ = blobs
    x = x[:300]
    vc = VarClust(TRUE_K, prior="normal", latent_dim=2, hidden=(32, 32), epochs=3,
                  pretrain_epochs=10, batch_size=64, likelihood="gaussian", seed=1,
                  device="cpu").fit(x, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PointEstimateWarning)
        idata = to_inference_data(vc, x, 4, importance_samples=4, seed=0)
    pred = vc.predict(x)
    entropy = idata.sample_stats["assignment_entropy"].values.mean()
    assert entropy < 0.5 * math.log(TRUE_K), entropy
    labels = idata.posterior["responsibilities"].values[0].mean(0).argmax(-1)
    assert (labels == pred.labels).mean() >= 0.95
    # and the mixture that defines its clusters is the one fitted to its codes, as vc.mixture_
    np.testing.assert_allclose(idata.posterior["mixture_weights"].values[0, 0],
                               vc.mixture_["weights"], rtol=1e-6)


@pytest.mark.parametrize("prior", ["dp", "bayes-gmm"])
def test_inference_data_leaves_the_global_rng_as_it_was(prior, blobs):
    """The draws use their own seed; a posterior over the globals is looked at without touching
    the caller's random stream."""
    x, _ = blobs
    x = x[:200]
    vc = VarClust(TRUE_K, prior=prior, global_guide="mean-field", latent_dim=2, hidden=(16,),
                  epochs=1, pretrain_epochs=3, batch_size=64, likelihood="gaussian", seed=1,
                  device="cpu").fit(x, progress=False)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    to_inference_data(vc, x, 4, importance_samples=2, seed=0)
    torch.testing.assert_close(torch.rand(3), expected)
