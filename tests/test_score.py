"""``VarClust.score(X)`` / ``summaries.mean_elbo``: the ELBO per datum, the global latents' KL
(Bayesian priors) counted once whatever the batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from varclust import VarClust
from varclust.summaries import mean_elbo


def blobs(n: int = 240, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    protos = rng.random((3, 16)) > 0.5
    y = np.arange(n) % 3
    flips = rng.random((n, 16)) < 0.05
    return np.where(flips, ~protos[y], protos[y]).astype(np.float32)


@pytest.mark.parametrize("prior", ["dp", "bayes-gmm", "gmm"])
def test_mean_elbo_does_not_depend_on_the_batch_size(prior):
    """Counting the global KL once a batch (the old score) moved the dp and bayes-gmm scores
    by 3.5 and 2.0 nats a datum between batches of 240 and 20 on these data; the per-datum
    ELBO moves only by the Monte Carlo noise of the draws (about 0.02 here)."""
    x = blobs()
    vc = VarClust(6, prior=prior, latent_dim=2, hidden=(16,), epochs=2, pretrain_epochs=5,
                  batch_size=60, device="cpu").fit(x, progress=False)
    data = vc._prepare(x)
    scores = {}
    for batch_size in (len(x), 20):
        torch.manual_seed(0)
        scores[batch_size] = np.mean([mean_elbo(vc.model, vc.guide, data, batch_size)
                                      for _ in range(20)])
    assert abs(scores[len(x)] - scores[20]) < 0.15, scores
    assert vc.score(x) == pytest.approx(scores[len(x)], abs=0.5)
