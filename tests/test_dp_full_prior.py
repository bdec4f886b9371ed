"""The Dirichlet-process prior with full covariances (``prior="dp-full"``)."""

from __future__ import annotations

import json

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from scipy import stats
from scipy.optimize import linear_sum_assignment
from sklearn.mixture import BayesianGaussianMixture
from synthetic import binary_blobs

from varclust import FitConfig, VarClust
from varclust.analysis import to_inference_data
from varclust.cli import main
from varclust.model.dp_full_prior import FullCovarianceDirichletProcessPrior, covariance_cholesky
from varclust.model.dp_prior import DirichletProcessPrior
from varclust.model.prior_fit import fit_prior_to_codes
from varclust.registry import build_model_and_guide
from varclust.summaries import mixture_parameters

GLOBALS = ("sticks", "loc", "precision")


def test_global_and_local_terms_match_a_hand_computation():
    """One draw from the guide: the global sites' log p - log q is the hand-computed sum (the
    Wishart prior Wishart(D, diag(r)^-1), the posterior Wishart(df_k, S_k S_k^T)), and the
    model's z density at cluster k is MultivariateNormal(loc_k, Lambda_k^-1 + s^2 I)."""
    pyro.set_rng_seed(4)
    k, d, num_data = 3, 2, 500
    config = FitConfig(num_clusters=k, latent_dim=d, hidden=(8,), prior="dp-full",
                       device="cpu", dp_concentration=0.7, likelihood="gaussian")
    model, guide = build_model_and_guide(config, (5,))
    prior = model.prior
    variance = torch.tensor([2.0, 0.5])
    prior.set_mixture(torch.tensor([0.5, 0.3, 0.2]), torch.randn(k, d), torch.rand(k, d) + 0.5)
    prior.set_code_moments(torch.tensor([0.5, -1.0]), variance)  # after: set_mixture sets them
    guide_module = prior.global_guide
    with torch.no_grad():  # a posterior away from the start, with correlations and small df
        guide_module.precision_df_unconstrained.fill_(np.log(4.0 - d))  # df = 4 (> D)
        tril = torch.tensor([[0.8, 0.0], [0.4, 0.6]]).expand(k, d, d)
        guide_module.precision_tril_unconstrained.copy_(
            torch.distributions.transform_to(torch.distributions.constraints.lower_cholesky)
            .inv(tril))
    x, indices = torch.randn(4, 5), torch.tensor([3, 10, 99, 400])
    guide_trace = poutine.trace(guide).get_trace(x, indices, num_data)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
        x, indices, num_data)
    assert [s for s in GLOBALS if s in guide_trace.nodes] == list(GLOBALS)
    for tr in (guide_trace, model_trace):
        tr.compute_log_prob()
    np.testing.assert_allclose(guide_module.precision_df.detach().numpy(), 4.0, rtol=1e-5)
    pyro_terms = sum(model_trace.nodes[s]["log_prob_sum"].item()
                     - guide_trace.nodes[s]["log_prob_sum"].item() for s in GLOBALS)

    value = {s: guide_trace.nodes[s]["value"].detach().double().numpy() for s in GLOBALS}
    df = guide_module.precision_df.detach().double().numpy()
    s_tril = guide_module.precision_tril.detach().double().numpy()
    var = variance.double().numpy()
    hand = (stats.beta.logpdf(value["sticks"], 1, 0.7).sum()
            - stats.beta.logpdf(value["sticks"], guide_module.stick_a.detach().numpy(),
                                guide_module.stick_b.detach().numpy()).sum())
    hand += (stats.norm.logpdf(value["loc"], [0.5, -1.0], np.sqrt(var)).sum()
             - stats.norm.logpdf(value["loc"], guide_module.loc_loc.detach().numpy(),
                                 guide_module.loc_scale.detach().numpy()).sum())
    for j in range(k):
        precision = value["precision"][j]
        hand += stats.wishart.logpdf(precision, df=d, scale=np.diag(1 / var))
        hand -= stats.wishart.logpdf(precision, df=df[j], scale=s_tril[j] @ s_tril[j].T)
    assert pyro_terms == pytest.approx(hand, rel=1e-4, abs=1e-3)

    z = model_trace.nodes["z"]["value"].detach().double().numpy()  # (B, D)
    cluster = model_trace.nodes["cluster"]["value"].numpy()  # (B,): drawn, not enumerated here
    log_density = model_trace.nodes["z"]["unscaled_log_prob"].detach().double().numpy()  # (B,)
    for n, j in enumerate(cluster):
        covariance = np.linalg.inv(value["precision"][j]) + prior.min_scale**2 * np.eye(d)
        expected = stats.multivariate_normal.logpdf(z[n], value["loc"][j], covariance)
        assert log_density[n] == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_the_wishart_prior_has_the_diagonal_priors_mean_precision():
    """E[Lambda] = diag(D / r) (the diagonal DP's mean precision), and each diagonal precision
    is marginally that prior's Gamma(nu D / 2, rate nu r / 2): checked by drawing."""
    prior = FullCovarianceDirichletProcessPrior(5, 3, scale_pseudo_count=2.0)
    variance = torch.tensor([0.5, 2.0, 4.0])
    prior.set_code_moments(torch.zeros(3), variance)
    pyro.set_rng_seed(0)
    with pyro.plate("draws", 4000, dim=-1):
        trace = poutine.trace(prior.sample_parameters).get_trace()
    precision = trace.nodes["precision"]["value"]  # (4000, K, D, D)
    mean = precision.mean((0, 1))
    np.testing.assert_allclose(mean.diagonal().numpy(), (3 / variance).numpy(), rtol=0.03)
    assert mean.fill_diagonal_(0).abs().max() < 0.05 * float(3 / variance.max())
    gamma = stats.gamma(a=2.0 * 3 / 2, scale=2 / (2.0 * 0.5))
    draws = precision[..., 0, 0].flatten().numpy()
    assert stats.kstest(draws, gamma.cdf).pvalue > 0.01


def tilted_blobs(seed=0):
    """900 2-D codes in 3 long, thin, tilted clusters (sd 3 along, 0.3 across): the diagonal DP
    needs several axis-aligned components for each."""
    rng = np.random.default_rng(seed)
    blobs = []
    for centre, angle in [((-6, 0), 0.6), ((0, 5), -0.8), ((6, -2), 0.2)]:
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        blobs.append(rng.normal(size=(300, 2)) * [3.0, 0.3] @ rotation.T + centre)
    return torch.tensor(np.concatenate(blobs), dtype=torch.float32)


def shares(prior, codes):
    with torch.no_grad():
        return prior.log_joint(codes).softmax(-1).mean(0).numpy()


@pytest.fixture(scope="module")
def fitted_on_tilted_blobs():
    """Both DP priors, truncation 20, fitted alone to the tilted clusters from the same start
    (20 random codes as means, unit scales)."""
    codes = tilted_blobs()
    start = (torch.full((20,), 1 / 20), codes[torch.randperm(len(codes),
             generator=torch.Generator().manual_seed(0))[:20]], torch.ones(20, 2))
    priors = {}
    for name, prior_type in [("dp", DirichletProcessPrior),
                             ("dp-full", FullCovarianceDirichletProcessPrior)]:
        prior = prior_type(20, 2, settle_steps=0)
        prior.set_code_moments(codes.mean(0), codes.var(0))
        prior.set_mixture(*start)
        fit_prior_to_codes(prior, codes, steps=1500, seed=0)
        priors[name] = prior
    return codes, priors


def test_full_covariances_keep_one_component_per_tilted_cluster(fitted_on_tilted_blobs):
    codes, priors = fitted_on_tilted_blobs
    assert (shares(priors["dp-full"], codes) >= 0.01).sum() == 3
    assert priors["dp-full"].weights_in_use() == 3
    assert (shares(priors["dp"], codes) >= 0.01).sum() > 3  # the diagonal one splits them


def test_weights_on_fixed_codes_match_scikit_learns_full_dirichlet_process(
        fitted_on_tilted_blobs):
    """The same components hold >= 1 % of the data as in scikit-learn's full-covariance DP
    mixture with the same prior (``covariance_prior`` = diag(r), D degrees of freedom), and
    their weights agree to 0.02 (the tolerance of the diagonal prior's test, for the same
    reason: the stick mass the emptied components keep after a finite SVI run)."""
    codes, priors = fitted_on_tilted_blobs
    prior = priors["dp-full"]
    bgm = BayesianGaussianMixture(
        n_components=20, weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=1.0, covariance_type="full", max_iter=1000, random_state=0,
        covariance_prior=np.diag(codes.var(0).numpy()), degrees_of_freedom_prior=2,
        mean_prior=codes.mean(0).numpy(),
    ).fit(codes.numpy())
    theirs = np.flatnonzero(bgm.predict_proba(codes.numpy()).mean(0) >= 0.01)
    ours = np.flatnonzero(shares(prior, codes) >= 0.01)
    assert len(theirs) == len(ours) == 3
    our_loc = prior.point_parameters()["loc"].detach().numpy()[ours]
    distance = np.linalg.norm(our_loc[:, None] - bgm.means_[theirs][None], axis=-1)
    rows, cols = linear_sum_assignment(distance)
    assert distance[rows, cols].max() < 0.3
    weights = prior.point_parameters()["log_weights"].exp().detach().numpy()
    np.testing.assert_allclose(weights[ours][rows], bgm.weights_[theirs][cols], atol=0.02)
    our_cov = prior.point_parameters()["scale_tril"].detach().numpy()[ours][rows]
    our_cov = our_cov @ our_cov.transpose(0, 2, 1)
    np.testing.assert_allclose(our_cov, bgm.covariances_[theirs][cols], rtol=0.15, atol=0.05)


@pytest.mark.parametrize("guide", ["marginal", "relaxed"])
def test_a_fit_with_full_covariances_runs_and_describes_its_mixture(guide, tmp_path):
    """VarClust with prior="dp-full": the fit runs with either guide, the mixture's scales are
    the marginal standard deviations of its covariances, the InferenceData draws the
    precisions from their posterior, and a saved fit loads with the same clusters."""
    x, _ = binary_blobs(120, seed=0)
    fit = VarClust(num_clusters=6, latent_dim=2, hidden=(32,), prior="dp-full", guide=guide,
                   epochs=2, pretrain_epochs=2, batch_size=60, dp_settle_steps=30,
                   dp_epoch_settle_steps=10, device="cpu", seed=0).fit(x, progress=False)
    assert fit.predict(x).responsibilities.shape == (len(x), 6)
    mixture = mixture_parameters(fit.model.prior)
    tril = fit.model.prior.point_parameters()["scale_tril"].detach().numpy()
    np.testing.assert_allclose(mixture["scales"],
                               np.sqrt(np.diagonal(tril @ tril.transpose(0, 2, 1), 0, 1, 2)),
                               rtol=1e-5)
    idata = to_inference_data(fit, x[:20], num_samples=3, importance_samples=2)
    assert idata.posterior["mixture_scale"].shape == (1, 3, 6, 2)
    tril = idata.posterior["mixture_scale_tril"].values  # (chain, draw, K, D, D)
    assert tril.shape == (1, 3, 6, 2, 2) and np.all(np.triu(tril, 1) == 0)
    np.testing.assert_allclose(idata.posterior["mixture_scale"].values,
                               np.sqrt((tril**2).sum(-1)), rtol=1e-5)
    fit.save(tmp_path / "model.pt")
    loaded = VarClust.load(tmp_path / "model.pt", device="cpu")
    np.testing.assert_allclose(loaded.predict(x).responsibilities,
                               fit.predict(x).responsibilities, atol=1e-6)


def test_cli_fit_with_dp_full_records_the_prior(tmp_path):
    run = tmp_path / "dpf"
    assert main(["fit", "--dataset", "digits", "--prior", "dp-full", "--clusters", "12",
                 "--dp-settle-steps", "20", "--dp-epoch-settle-steps", "5", "--epochs", "1",
                 "--pretrain-epochs", "1", "--hidden", "16", "--latent-dim", "2", "--quiet",
                 "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["config"]["prior"] == "dp-full"
    assert 1 <= metrics["history"][0]["clusters_in_use"] <= 12


@pytest.mark.parametrize("setting", [{"method": "em"}, {"revive_clusters": 0.01}])
def test_settings_that_would_overwrite_the_posterior_are_refused(setting):
    with pytest.raises(ValueError, match="dp-full"):
        FitConfig(prior="dp-full", num_clusters=10, **setting)


def test_a_wishart_without_enough_degrees_of_freedom_is_refused():
    with pytest.raises(ValueError, match="dp_scale_pseudo_count above 0.9"):
        FullCovarianceDirichletProcessPrior(5, 10, scale_pseudo_count=0.9)


def test_a_precision_float64_cannot_factor_gets_a_covariance_not_an_error():
    """A numerically singular draw of Lambda (rank 1 here) gives a finite, huge covariance."""
    singular = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[2.0, 0.0], [0.0, 1.0]]])
    tril = covariance_cholesky(singular, 1e-3)
    assert torch.isfinite(tril).all()
    np.testing.assert_allclose((tril[1] @ tril[1].T).numpy(),
                               np.diag([0.5 + 1e-6, 1 + 1e-6]), rtol=1e-5)
    assert float((tril[0] @ tril[0].T).max()) > 1e6
