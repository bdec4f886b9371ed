"""Numerical guards: non-finite steps are skipped and counted, a run that keeps producing them
stops naming epoch, batch and site, and the mixture scales cannot reach zero."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from varclust import VarClust
from varclust.guides.encoders import make_encoder
from varclust.guides.marginal import MarginalGuide
from varclust.inference.checkpoint import load_checkpoint
from varclust.inference.guards import NonFiniteTrainingError
from varclust.inference.svi import SVITrainer
from varclust.model.decoders import make_decoder
from varclust.model.generative import ClusteringModel
from varclust.model.likelihoods import BernoulliLikelihood
from varclust.model.priors import GaussianMixturePrior, assign_param


def small_trainer(max_bad_steps: int = 3) -> SVITrainer:
    torch.manual_seed(0)
    model = ClusteringModel(
        GaussianMixturePrior(2, 2), make_decoder("mlp", 2, (6,), (8,)), BernoulliLikelihood(), (6,)
    )
    guide = MarginalGuide(make_encoder("mlp", (6,), 2, (8,)))
    return SVITrainer(model, guide, 1e-2, max_bad_steps=max_bad_steps)


def data_with_nan_rows(rows: list[int]) -> torch.Tensor:
    x = torch.rand(40, 6, generator=torch.Generator().manual_seed(1))
    x[rows] = float("nan")
    return x


def snapshot(trainer: SVITrainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.elbo.parameters()]


def test_bad_steps_are_skipped_and_counted() -> None:
    trainer = small_trainer()
    x = data_with_nan_rows([7])  # one of the four batches of 10 holds it, in every epoch
    before, outcomes = snapshot(trainer), []

    def on_step(i: int, loss: torch.Tensor) -> None:
        after = snapshot(trainer)
        moved = any(not torch.equal(a, b) for a, b in zip(before, after))
        outcomes.append((bool(torch.isfinite(loss)), moved))
        before[:] = after

    for epoch in range(2):
        elbo = trainer.epoch(x, 10, seed=0, epoch=epoch, on_step=on_step)
        assert np.isfinite(elbo)
        assert trainer.last_epoch_skipped == 1
    assert trainer.bad_steps.total == 2
    # a skipped step moves no parameter; every good step does
    assert sorted(outcomes) == [(False, False)] * 2 + [(True, True)] * 6
    adam_steps = {int(s["step"]) for s in trainer.optimizer.state.values()}
    assert adam_steps == {6}  # Adam's state saw only the good steps
    assert all(torch.isfinite(p).all() for p in trainer.elbo.parameters())


def poison_encoder(trainer: SVITrainer) -> None:
    with torch.no_grad():
        trainer.guide.encoder.body[0].weight[0, 0] = float("nan")


@pytest.mark.parametrize("nan_rows, max_bad, poison, expected", [
    (list(range(40)), 3, None, ["epoch 1, batch 3 of 4", "3 steps in a row",
                                "model site 'x': log-prob not finite for 10 of 10 data points"]),
    ([], 1, poison_encoder, ["epoch 1, batch 1 of 4", "guide site 'z': log-prob not finite",
                             "parameters not finite: guide.encoder.body.0.weight"]),
], ids=["NaN data", "NaN parameter"])
def test_run_of_bad_steps_stops_naming_epoch_batch_and_site(
    nan_rows, max_bad, poison, expected
) -> None:
    trainer = small_trainer(max_bad_steps=max_bad)
    if poison is not None:
        poison(trainer)
    with pytest.raises(NonFiniteTrainingError) as err:
        trainer.epoch(data_with_nan_rows(nan_rows), 10, seed=0, epoch=0)
    for part in expected:
        assert part in str(err.value)


def test_diverging_fit_stops_and_keeps_a_finite_checkpoint(tmp_path: Path) -> None:
    x = np.random.default_rng(0).uniform(size=(60, 6)).astype(np.float32)
    vc = VarClust(num_clusters=2, latent_dim=2, hidden=(8,), epochs=3, pretrain_epochs=0,
                  batch_size=10, learning_rate=1e30, max_bad_steps=4, checkpoint_every_steps=1,
                  device="cpu")
    with pytest.raises(NonFiniteTrainingError, match=r"epoch 1, batch \d of 6.*site 'x'"):
        vc.fit(x, out_dir=tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert all(torch.isfinite(t).all() for t in state["guide"].values())


def test_mixture_scales_are_floored() -> None:
    prior = GaussianMixturePrior(3, 2, min_scale=1e-3)
    with torch.no_grad():
        prior.scale_unconstrained.fill_(-1e4)  # an optimiser driving the scales towards zero
    assert float(prior.scale.detach().min()) >= 1e-3
    assert torch.isfinite(prior.log_joint(torch.randn(5, 2) * 100)).all()
    assign_param(prior, "scale", torch.zeros(3, 2).clamp_min(2e-3))
    assert float(prior.scale.detach().min()) == pytest.approx(2e-3)
