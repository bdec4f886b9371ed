"""``pretrain_batch_size``: autoencoder pretraining on its own mini-batch (issue 16), SVI on
``batch_size``; 0 leaves pretraining on ``batch_size``."""

from __future__ import annotations

import pytest
import torch

from varclust import FitConfig, VarClust
from varclust.inference.pretrain import Pretrainer


def pretraining_batches(monkeypatch, **settings) -> list[int]:
    """The sizes of the mini-batches pretraining steps on, in a tiny fit with ``settings``."""
    sizes: list[int] = []
    step = Pretrainer.train_step

    def recording_step(self, x):
        sizes.append(len(x))
        step(self, x)

    monkeypatch.setattr(Pretrainer, "train_step", recording_step)
    x = torch.rand(100, 6, generator=torch.Generator().manual_seed(0))
    VarClust(num_clusters=2, latent_dim=2, hidden=(8,), epochs=1, pretrain_epochs=1, seed=0,
             device="cpu", **settings).fit(x, progress=False)
    return sizes


def test_pretraining_steps_on_its_own_batch(monkeypatch):
    assert pretraining_batches(monkeypatch, batch_size=10, pretrain_batch_size=40) == [40, 40, 20]
    assert pretraining_batches(monkeypatch, batch_size=30) == [30, 30, 30, 10]


def test_negative_pretrain_batch_size_is_refused():
    with pytest.raises(ValueError, match="pretrain_batch_size must be >= 0"):
        FitConfig(pretrain_batch_size=-1)
