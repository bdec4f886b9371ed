"""``VarClust.score(X)`` / ``summaries.mean_elbo``: the ELBO per datum, the global latents' KL
(Bayesian priors) counted once whatever the batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import binary_blobs

from varclust import VarClust
from varclust.summaries import mean_elbo


@pytest.mark.parametrize("prior", ["dp", "bayes-gmm", "gmm"])
def test_mean_elbo_does_not_depend_on_the_batch_size(prior):
    """Counting the global KL once a batch (the old score) moved the dp and bayes-gmm scores
    by 3.5 and 2.0 nats a datum between batches of 240 and 20 on these data; the per-datum
    ELBO moves only by the Monte Carlo noise of the draws (about 0.02 here)."""
    x = binary_blobs(240, num_pixels=16, flip=0.05)[0]
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
