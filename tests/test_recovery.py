"""A well-separated synthetic mixture pushed through a fixed random decoder is recovered."""

import math

import numpy as np
import pytest
import torch

from varclust import VarClust, cluster_accuracy


def synthetic_mixture(num_clusters: int, per_cluster: int, dim: int, seed: int, binary: bool):
    """K clusters of 2-D codes on a circle of radius 4 (spread 0.3), decoded by a frozen random
    MLP with sigmoid outputs to ``dim`` pixel probabilities; binary data are Bernoulli draws
    from those, grey-level data get a little Gaussian noise (clipped to [0, 1])."""
    g = torch.Generator().manual_seed(seed)
    angles = torch.arange(num_clusters) * 2 * math.pi / num_clusters
    centres = 4.0 * torch.stack([angles.cos(), angles.sin()], 1)
    y = torch.arange(num_clusters).repeat_interleave(per_cluster)
    z = centres[y] + 0.3 * torch.randn(len(y), 2, generator=g)
    decoder = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, dim))
    with torch.no_grad():
        for p in decoder.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        probs = torch.sigmoid(decoder(z))
    if binary:
        x = torch.bernoulli(probs, generator=g)
    else:
        x = (probs + 0.05 * torch.randn(probs.shape, generator=g)).clamp(0, 1)
    order = torch.randperm(len(y), generator=g)
    return x[order].numpy(), y[order].numpy()


@pytest.mark.parametrize(
    "num_clusters, dim, binary, likelihood",
    [(3, 32, True, "bernoulli"), (4, 16, False, "bernoulli")],
    ids=["K3-binary", "K4-grey"],
)
def test_recovers_well_separated_clusters(num_clusters, dim, binary, likelihood):
    x, y = synthetic_mixture(num_clusters, 200, dim, seed=1, binary=binary)
    vc = VarClust(
        num_clusters,
        latent_dim=2,
        hidden=(32, 32),
        likelihood=likelihood,
        epochs=15,
        pretrain_epochs=15,
        batch_size=64,
        seed=1,
        device="cpu",
    )
    vc.fit(x, y, progress=False)
    assert len(vc.history) == 15 and len(vc.pretrain_losses) == 15
    assert vc.history[-1]["elbo"] > vc.history[0]["elbo"]  # the ELBO went up
    assert vc.pretrain_losses[-1] < vc.pretrain_losses[0]

    pred = vc.predict(x)
    assert cluster_accuracy(y, pred.labels) >= 0.95
    assert vc.history[-1]["acc"] >= 0.95  # the per-epoch scores agree
    assert vc.score(x, y)["nmi"] > 0.85

    # responsibilities: (N, K), rows sum to 1, argmax = label, entropy within [0, log K]
    n = len(x)
    assert pred.labels.shape == (n,)
    assert pred.responsibilities.shape == (n, num_clusters)
    assert np.all(pred.responsibilities >= 0)
    np.testing.assert_allclose(pred.responsibilities.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(pred.responsibilities.argmax(1), pred.labels)
    assert pred.entropy.shape == (n,)
    assert np.all(pred.entropy >= -1e-6) and np.all(pred.entropy <= math.log(num_clusters) + 1e-6)
    r = np.clip(pred.responsibilities, 1e-30, 1)
    np.testing.assert_allclose(pred.entropy, -(pred.responsibilities * np.log(r)).sum(1), atol=1e-4)

    codes = vc.encode(x)
    assert codes.shape == (n, 2) and np.isfinite(codes).all()

    samples = vc.sample(1, 7)
    assert isinstance(samples, torch.Tensor)
    assert samples.shape == (7, dim)
    if likelihood == "bernoulli":
        assert float(samples.min()) >= 0.0 and float(samples.max()) <= 1.0


def test_samples_of_a_cluster_look_like_its_members():
    x, y = synthetic_mixture(3, 200, 32, seed=2, binary=True)
    vc = VarClust(
        3,
        latent_dim=2,
        hidden=(32, 32),
        epochs=15,
        pretrain_epochs=15,
        batch_size=64,
        seed=2,
        device="cpu",
    )
    vc.fit(x, progress=False)
    labels = vc.predict(x).labels
    for k in range(3):
        samples = vc.sample(k, 200)
        assert samples.shape == (200, 32)
        assert 0.0 <= float(samples.min()) and float(samples.max()) <= 1.0
        # the mean sample is closest to the mean of the data assigned to cluster k
        means = np.stack([x[labels == j].mean(0) for j in range(3)])
        dist = np.linalg.norm(means - samples.mean(0).numpy(), axis=1)
        assert dist.argmin() == k


def test_gaussian_likelihood_keeps_the_initial_clusters():
    """Regression: q(z|x) starts as narrow as the fitted mixture, so SVI keeps the clusters."""
    x, y = synthetic_mixture(4, 200, 16, seed=2, binary=False)
    vc = VarClust(
        4,
        latent_dim=2,
        hidden=(32, 32),
        likelihood="gaussian",
        epochs=15,
        pretrain_epochs=15,
        batch_size=64,
        seed=2,
        device="cpu",
    )
    vc.fit(x, y, progress=False)
    assert cluster_accuracy(y, vc.predict(x).labels) >= 0.95
