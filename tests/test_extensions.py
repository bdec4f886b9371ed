"""Your own components through the paths a user takes besides fit/predict: restarts, reports
of run folders, revival, held-out comparison and InferenceData of a custom generator or prior,
and what the library says when a custom component lacks what a path needs."""

from __future__ import annotations

import logging

import pytest
import torch
from synthetic import binary_blobs

from varclust import VarClust
from varclust.analysis import heldout_log_likelihood, to_inference_data
from varclust.analysis.report import write_report
from varclust.model import GaussianMixturePrior, GenerativeModel
from varclust.model.priors import MixturePrior
from varclust.restarts import fit_restarts

TINY = dict(latent_dim=2, hidden=(8,), epochs=1, pretrain_epochs=1, batch_size=30, device="cpu")


@pytest.fixture(autouse=True)
def _quiet():
    logging.disable(logging.WARNING)  # tiny fits warn of collapse
    yield
    logging.disable(logging.NOTSET)


class LocOnlyPrior(MixturePrior):
    """A prior whose point parameters have no ``scale`` (as the README's UnitScaleMixture)."""

    def __init__(self, num_clusters: int, latent_dim: int) -> None:
        super().__init__(num_clusters, latent_dim)
        self.inner = GaussianMixturePrior(num_clusters, latent_dim)

    def point_parameters(self):
        params = self.inner.point_parameters()
        return {"log_weights": params["log_weights"], "loc": params["loc"]}

    def component(self, params, cluster):
        return self.inner.component({**self.inner.point_parameters(), **params}, cluster)


def test_restarts_and_reports_take_your_own_components(tmp_path):
    x, y = binary_blobs(60)
    config = VarClust(3, prior=GaussianMixturePrior, **TINY).config
    assert config.prior == "custom"
    result = fit_restarts(config, x, restarts=2, out_dir=tmp_path / "r", progress=False,
                          components={"prior": GaussianMixturePrior})
    assert type(result.best.model.prior) is GaussianMixturePrior
    run = tmp_path / "run"
    result.best.save(run, x, y)
    page = write_report(run, num_data=30, num_samples=2, importance_samples=2,
                        components={"prior": GaussianMixturePrior})
    assert page.exists()


def test_revival_says_what_a_prior_without_scales_lacks():
    x, _ = binary_blobs(60)
    with pytest.raises(ValueError, match=r"splits Gaussian components.*\[.scale.\]"):
        VarClust(3, prior=LocOnlyPrior, revive_clusters=0.3, **TINY).fit(x, progress=False)


class ReconstructionLoss(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module, decoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(self.encoder(x)[0])
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, x)


class Generator(GenerativeModel):
    """The README's list for a generator's model, and no more: a Bernoulli decoder."""

    def __init__(self, prior: MixturePrior, data_shape: tuple) -> None:
        super().__init__()
        self.prior = prior
        self.decoder = torch.nn.Linear(prior.latent_dim, data_shape[-1])

    def forward(self, x, indices=None, num_data=None, cluster=None, cluster_mask=None):
        import pyro
        import pyro.distributions as dist

        from varclust.model.generative import data_plate

        params = self.prior.sample_parameters()
        with data_plate(x, indices, num_data):
            z = self.prior(params, cluster, cluster_mask)
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def check_data(self, x):
        pass

    def generator_modules(self):
        return [self.decoder]

    def pretraining_loss(self, encoder):
        return ReconstructionLoss(encoder, self.decoder)

    def generate(self, z, steps=None, guidance=0.0):
        return torch.sigmoid(self.decoder(z))


def test_a_custom_generator_reaches_the_analysis_and_refuses_the_relaxed_guide(monkeypatch):
    from varclust.registry import GENERATORS, GeneratorEntry, register_generator

    monkeypatch.setitem(GENERATORS, "unused", None)  # monkeypatch restores the table after
    del GENERATORS["unused"]
    register_generator("linear-bernoulli", GeneratorEntry(
        build=lambda config, data_shape, prior, likelihood: Generator(prior, data_shape),
        check_data=lambda x, likelihood: None))
    x, _ = binary_blobs(60)
    vc = VarClust(3, generator="linear-bernoulli", **TINY).fit(x, progress=False)
    idata = to_inference_data(vc, x[:20], 2, importance_samples=2)
    assert idata.posterior_predictive["reconstruction"].shape[-1] == x.shape[-1]
    assert heldout_log_likelihood({"a": vc, "b": vc}, x[:20], num_particles=2)["mean"].notna().all()
    with pytest.raises(ValueError, match="relaxed guide needs a model with a relaxed cluster"):
        VarClust(3, generator="linear-bernoulli", guide="relaxed", **TINY).fit(x, progress=False)
