"""benchmarks/seed_criteria.py: the label-free criteria of a finished run folder."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch
from synthetic import binary_blobs

from varclust import VarClust

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "seed_criteria.py"


def _script(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # as `python benchmarks/...` runs it
    return importlib.import_module("seed_criteria")


def _fit(images, run: Path, epochs: int, pretrain_epochs: int) -> VarClust:
    """A K = 3 fit of images (N, 16) into the run folder ``run``."""
    return VarClust(3, latent_dim=2, hidden=(16,), epochs=epochs, pretrain_epochs=pretrain_epochs,
                    batch_size=50, device="cpu", seed=0).fit(images, out_dir=run, progress=False)


def test_the_model_likelihood_criterion_ranks_a_trained_fit_above_an_untrained_one(
        tmp_path, monkeypatch):
    """The log-likelihood per datum (importance-weighted, the cluster summed out) of a fit
    trained for 30 epochs (after 20 of pretraining) is higher than that of one trained for 1
    (after 5): with 16 pixels flipped with probability 0.05 around 3 prototypes, log p(x) can
    reach about -(16 * 0.199 + log 3) = -4.3 nats; uniform pixels score 16 * log 0.5 = -11.1
    (measured: -6.3 and -14.8)."""
    script = _script(monkeypatch)
    images = torch.as_tensor(binary_blobs(300, num_pixels=16, flip=0.05)[0])
    scores = {}
    for name, epochs, pretrain in (("short", 1, 5), ("long", 30, 20)):
        run = tmp_path / name
        criteria, labels = script.label_free_criteria(_fit(images, run, epochs, pretrain), run,
                                                      images)
        assert labels.shape == (300,)
        assert set(criteria) == set(script.CRITERIA) - {"agreement", "neighbours"}
        assert all(np.isfinite(v) for v in criteria.values()), criteria
        scores[name] = criteria["log_likelihood"]
    assert scores["long"] > scores["short"] + 2, scores
    assert scores["long"] > -8, scores
