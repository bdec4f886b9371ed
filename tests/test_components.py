"""Every prior x guide x likelihood trains, the registry's names and objects, the likelihoods."""

import itertools

import numpy as np
import pyro.distributions as dist
import pytest
import torch

from varclust import FitConfig, VarClust
from varclust.model import GreyLevelCategoricalLikelihood, MixturePrior
from varclust.registry import GUIDES, LIKELIHOODS, PRIORS, register_prior

#: the relaxed guide needs a prior with a relaxed form p(z | w); the standard normal has none
COMBINATIONS = [c for c in itertools.product(sorted(PRIORS), sorted(GUIDES), sorted(LIKELIHOODS))
                if c[:2] != ("normal", "relaxed")]


def tiny_data(n=24, dim=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, dim, generator=g), np.arange(n) % 3


def tiny(**settings) -> VarClust:
    base = dict(latent_dim=2, hidden=(8,), epochs=2, pretrain_epochs=1, batch_size=8, seed=0,
                device="cpu", dp_settle_steps=20)
    return VarClust(3, **{**base, **settings})


def test_the_registry_lists_every_component_of_the_issue():
    assert set(PRIORS) >= {"gmm", "normal", "bayes-gmm", "dp"}
    assert set(GUIDES) >= {"marginal", "mixture", "relaxed"}
    assert set(LIKELIHOODS) >= {"bernoulli", "cbernoulli", "gaussian", "laplace", "categorical256"}


@pytest.mark.parametrize("prior, guide, likelihood", COMBINATIONS,
                         ids=["-".join(c) for c in COMBINATIONS])
def test_every_combination_trains_with_finite_elbo(prior, guide, likelihood):
    x, _ = tiny_data()
    vc = tiny(prior=prior, guide=guide, likelihood=likelihood).fit(x, progress=False)
    elbos = [h["elbo"] for h in vc.history]
    assert len(elbos) == 2 and np.all(np.isfinite(elbos))
    pred = vc.predict(x)
    assert pred.responsibilities.shape == (24, 3)
    np.testing.assert_allclose(pred.responsibilities.sum(1), 1.0, atol=1e-5)
    samples = vc.sample(1, 4)
    assert samples.shape == (4, 12) and torch.isfinite(samples).all()
    if likelihood != "gaussian" and likelihood != "laplace":
        assert 0.0 <= float(samples.min()) and float(samples.max()) <= 1.0
    assert vc.config.prior == prior and vc.config.guide == guide


@pytest.mark.parametrize("guide", sorted(GUIDES))
def test_bayesian_prior_mean_field_guide_trains_and_keeps_its_posteriors(guide):
    x, _ = tiny_data()
    vc = tiny(prior="bayes-gmm", guide=guide, global_guide="mean-field",
              dirichlet_concentration=0.1).fit(x, progress=False)
    assert np.all(np.isfinite([h["elbo"] for h in vc.history]))
    assert all(1 <= h["clusters_in_use"] <= 3 for h in vc.history)
    names = dict(vc.model.prior.named_parameters())
    assert "global_guide.weights_concentration_unconstrained" in names
    # the guide samples the global sites, the model scores them
    import pyro

    gtrace = pyro.poutine.trace(vc.guide).get_trace(x[:4])
    assert {"weights", "loc", "scale"} <= set(gtrace.nodes)
    assert gtrace.nodes["weights"]["value"].shape == (3,)


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown prior 'gauss'.*bayes-gmm"):
        VarClust(3, prior="gauss")
    with pytest.raises(ValueError, match="unknown guide"):
        FitConfig(guide="amortised")
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        VarClust(3, likelihood="poisson")
    with pytest.raises(ValueError, match="global_guide"):
        VarClust(3, prior="bayes-gmm", global_guide="laplace")


class FixedScaleMixture(MixturePrior):
    """A user prior: equal weights, learned means, scale 0.5."""

    def __init__(self, num_clusters, latent_dim):
        super().__init__(num_clusters, latent_dim)
        self.loc = torch.nn.Parameter(2 * torch.randn(num_clusters, latent_dim))

    def point_parameters(self):
        return {"log_weights": torch.zeros(self.num_clusters), "loc": self.loc}

    def component(self, params, c):
        return dist.Normal(params["loc"][c], 0.5).to_event(1)


def test_custom_objects_train_save_and_load(tmp_path):
    x, _ = tiny_data()
    vc = tiny(prior=FixedScaleMixture, guide="mixture").fit(x, progress=False)
    assert vc.config.prior == "custom" and isinstance(vc.model.prior, FixedScaleMixture)
    vc.save(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="custom prior: pass the object"):
        VarClust.load(tmp_path / "m.pt", device="cpu")
    back = VarClust.load(tmp_path / "m.pt", device="cpu", prior=FixedScaleMixture)
    np.testing.assert_allclose(back.predict(x).responsibilities, vc.predict(x).responsibilities,
                               atol=1e-6)
    # a likelihood instance works too, and a factory must return a module
    lik = GreyLevelCategoricalLikelihood()
    assert tiny(likelihood=lik, epochs=1).fit(x, progress=False).model.likelihood is lik
    with pytest.raises(TypeError, match="not a torch/Pyro module"):
        tiny(prior=lambda num_clusters, latent_dim: "a string").fit(x, progress=False)


def test_registered_names_work_like_built_in_ones():
    register_prior("fixed-scale", FixedScaleMixture)
    try:
        x, _ = tiny_data()
        vc = tiny(prior="fixed-scale", epochs=1).fit(x, progress=False)
        assert isinstance(vc.model.prior, FixedScaleMixture)
    finally:
        PRIORS.pop("fixed-scale")


@pytest.mark.parametrize("prior", ["normal", "bayes-gmm", "dp"])
def test_priors_round_trip_through_checkpoints(prior, tmp_path):
    x, _ = tiny_data()
    vc = tiny(prior=prior, global_guide="mean-field").fit(x, progress=False)
    vc.save(tmp_path / "m.pt")
    back = VarClust.load(tmp_path / "m.pt", device="cpu")
    np.testing.assert_allclose(back.predict(x).responsibilities, vc.predict(x).responsibilities,
                               atol=1e-6)
    if prior == "normal":  # the clusters are the mixture fitted to the codes
        assert bool(back.model.prior.fitted)
        codes = torch.as_tensor(vc.encode(x))
        from sklearn.mixture import GaussianMixture

        gm = GaussianMixture(3, covariance_type="diag", n_init=3, random_state=0,
                             reg_covar=1e-4).fit(codes.double().numpy())
        np.testing.assert_allclose(np.sort(back.model.prior.fitted_weights.numpy()),
                                   np.sort(gm.weights_), atol=1e-4)


def test_standard_normal_prior_needs_its_fitted_mixture_before_clusters():
    from varclust.model import StandardNormalPrior

    prior = StandardNormalPrior(3, 2)
    with pytest.raises(RuntimeError, match="no clusters until a mixture is fitted"):
        prior.log_joint(torch.zeros(4, 2))


def test_grey_level_categorical_scores_the_rounded_level():
    lik = GreyLevelCategoricalLikelihood()
    data_shape = (1, 2, 3)
    assert lik.decoder_shape(data_shape) == (256, 2, 3)
    out = torch.randn(5, 256, 2, 3)
    x = torch.randint(0, 256, (5, 1, 2, 3)).float() / 255
    logp = lik(out, 3).log_prob(x)
    levels = (x * 255).round().long()
    logits = out.reshape(5, 256, 1, 2, 3).movedim(1, -1)
    expected = torch.distributions.Categorical(logits=logits).log_prob(levels).sum((1, 2, 3))
    torch.testing.assert_close(logp, expected)
    mean = lik.mean(out)
    assert mean.shape == (5, 1, 2, 3) and 0 <= float(mean.min()) and float(mean.max()) <= 1
    draws = lik(out, 3).sample()
    torch.testing.assert_close(draws * 255, (draws * 255).round())


@pytest.mark.parametrize("name, torch_dist", [
    ("cbernoulli", lambda out, lik: torch.distributions.ContinuousBernoulli(logits=out)),
    ("laplace", lambda out, lik: torch.distributions.Laplace(out, lik.scale)),
])
def test_new_likelihoods_are_the_torch_densities(name, torch_dist):
    lik = LIKELIHOODS[name]()
    out = torch.randn(4, 6)
    x = torch.rand(4, 6)
    torch.testing.assert_close(lik(out, 1).log_prob(x), torch_dist(out, lik).log_prob(x).sum(-1))
    if name == "laplace":
        assert [n for n, _ in lik.named_parameters()] == ["scale_unconstrained"]
    else:
        with pytest.raises(ValueError, match="needs data in"):
            lik.check_data(torch.tensor([1.5]))


@pytest.mark.parametrize("guide, prior, k", [("mixture", "gmm", 3), ("relaxed", "bayes-gmm", 5)])
def test_a_fit_starts_from_another_fits_autoencoder(tmp_path, guide, prior, k):
    """pretrained= copies the autoencoder (no pretraining of its own), whatever the guide,
    prior or K, from a VarClust or from its run folder."""
    x, _ = tiny_data()
    source = tiny(epochs=0).fit(x, out_dir=tmp_path, progress=False)
    with torch.no_grad():
        codes = source.guide.encoder(x)[0]
        images = source.model.decoder(codes)
    for pretrained in (source, tmp_path):
        vc = VarClust(k, latent_dim=2, hidden=(8,), batch_size=8, device="cpu", epochs=0,
                      pretrain_epochs=5, guide=guide, prior=prior)
        vc.fit(x, pretrained=pretrained, progress=False)
        with torch.no_grad():
            torch.testing.assert_close(vc.guide.encoder(x)[0], codes)
            torch.testing.assert_close(vc.model.decoder(codes), images)
        assert vc.pretrain_losses == source.pretrain_losses  # its 1 epoch, not 5 of its own
        assert vc.predict(x).responsibilities.shape == (len(x), k)


def test_a_fit_from_a_run_folder_equals_the_fit_from_the_object(tmp_path):
    """Loading the source (its modules built, then overwritten) draws nothing from the seeded
    fit's random stream, so pretrained=folder and pretrained=fit give the same fit."""
    x, _ = tiny_data()
    source = tiny(epochs=0).fit(x, out_dir=tmp_path, progress=False)
    fits = [VarClust(3, latent_dim=2, hidden=(8,), batch_size=8, device="cpu", epochs=2,
                     seed=4).fit(x, pretrained=pretrained, progress=False)
            for pretrained in (source, tmp_path)]
    for a, b in zip(fits[0].guide.state_dict().values(), fits[1].guide.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert [fit.metadata_["pretrained_from"] for fit in fits] == ["a VarClust object",
                                                                 str(tmp_path)]


def test_pretrained_with_other_networks_is_refused():
    x, _ = tiny_data()
    source = tiny(epochs=0).fit(x, progress=False)
    with pytest.raises(ValueError, match=r"hidden: pretrained \(8,\) vs \(16,\).*same settings"):
        tiny(hidden=(16,)).fit(x, pretrained=source, progress=False)
