"""The enumerated ELBO equals a hand computation with the cluster summed out.

ELBO = sum_n [ log p(x_n | z_n) + logsumexp_k( log pi_k + log N(z_n | mu_k, sigma_k) )
               - log q(z_n | x_n) ],   z_n ~ q(z | x_n) one sample,
scaled by N / B for a mini-batch of B out of N.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from torch.nn.functional import binary_cross_entropy_with_logits

from varclust import VarClust
from varclust.inference import SVITrainer

N, DATA_DIM, K, D = 5, 4, 3, 2


def build(likelihood: str = "bernoulli"):
    pyro.set_rng_seed(123)
    vc = VarClust(
        K, latent_dim=D, hidden=(8,), pretrain_epochs=0, likelihood=likelihood, device="cpu"
    )
    vc.build((DATA_DIM,))
    prior = vc.model.prior
    # a mixture whose weights, means and scales all differ, so every term matters
    prior.set_mixture(
        torch.tensor([0.5, 0.3, 0.2]),
        torch.tensor([[-1.0, 0.5], [0.7, -0.3], [0.2, 1.2]]),
        torch.tensor([[0.8, 1.3], [0.5, 0.9], [1.5, 0.6]]),
    )
    x = torch.rand(N, DATA_DIM, generator=torch.Generator().manual_seed(7))
    return vc, x


def guide_sample(vc: VarClust, x: torch.Tensor, seed: int, **kwargs) -> torch.Tensor:
    pyro.set_rng_seed(seed)
    trace = pyro.poutine.trace(vc.guide).get_trace(x, **kwargs)
    return trace.nodes["z"]["value"].detach()


def hand_elbo_terms(vc: VarClust, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-datum ELBO terms (B,) for the given z, computed without Pyro's machinery."""
    model, prior = vc.model, vc.model.prior
    with torch.no_grad():
        out = model.decoder(z)
        if vc.config.likelihood == "bernoulli":
            log_px = -binary_cross_entropy_with_logits(out, x, reduction="none").sum(-1)
        else:
            scale = model.likelihood.scale
            log_px = torch.distributions.Normal(out, scale).log_prob(x).sum(-1)
        # log N(z_n | mu_k, sigma_k), written out: (B, K)
        diff = (z[:, None, :] - prior.loc[None]) / prior.scale[None]
        log_norm = prior.scale[None].log() + 0.5 * math.log(2 * math.pi)
        log_comp = (-0.5 * diff**2 - log_norm).sum(-1)
        log_pz = torch.logsumexp(prior.weights.log() + log_comp, dim=-1)
        loc, scale = vc.guide.encoder(x)
        log_qz = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
    return log_px + log_pz - log_qz


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_enumerated_elbo_matches_hand_computation(likelihood):
    vc, x = build(likelihood)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)(vc.model, vc.guide)
    seed = 2024
    pyro.set_rng_seed(seed)
    loss = elbo(x)
    z = guide_sample(vc, x, seed)
    expected = hand_elbo_terms(vc, x, z).sum()
    assert loss.item() == pytest.approx(-expected.item(), abs=1e-4, rel=1e-6)
    # the comparison is sensitive to z: another draw gives another value
    z_other = guide_sample(vc, x, seed + 1)
    assert abs(hand_elbo_terms(vc, x, z_other).sum().item() - expected.item()) > 1e-2
    # the loss is differentiable w.r.t. every parameter of the mixture
    loss.backward()
    params = dict(vc.model.prior.named_parameters())
    assert set(params) == {"weights_unconstrained", "loc_unconstrained", "scale_unconstrained"}
    for name, p in params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_trainer_uses_the_same_elbo():
    vc, x = build()
    trainer = SVITrainer(vc.model, vc.guide, learning_rate=1e-3)
    pyro.set_rng_seed(5)
    loss = trainer.elbo(x)
    z = guide_sample(vc, x, 5)
    assert loss.item() == pytest.approx(-hand_elbo_terms(vc, x, z).sum().item(), abs=1e-4)


@pytest.mark.parametrize("indices", [[1, 3], [4, 0, 2]])
def test_minibatch_is_scaled_by_n_over_b(indices):
    vc, x = build()
    idx = torch.tensor(indices)
    batch = x[idx]
    elbo = TraceEnum_ELBO(max_plate_nesting=1)(vc.model, vc.guide)
    seed = 99
    pyro.set_rng_seed(seed)
    scaled = elbo(batch, idx, N)
    z = guide_sample(vc, batch, seed, indices=idx, num_data=N)
    batch_sum = hand_elbo_terms(vc, batch, z).sum()
    assert scaled.item() == pytest.approx(-(N / len(idx)) * batch_sum.item(), abs=1e-4, rel=1e-6)
    # and without num_data the same batch is not scaled
    pyro.set_rng_seed(seed)
    unscaled = elbo(batch)
    assert unscaled.item() == pytest.approx(-batch_sum.item(), abs=1e-4, rel=1e-6)


def test_cluster_posterior_is_bayes_rule_at_the_code_mean():
    vc, x = build()
    prior = vc.model.prior
    with torch.no_grad():
        logits = vc.guide.cluster_logits(x, prior)
        loc, _ = vc.guide.encode(x)
        comp = dist.Normal(prior.loc, prior.scale).to_event(1)
        joint = prior.weights.log() + comp.log_prob(loc[:, None])
        expected = joint - joint.logsumexp(-1, keepdim=True)
    assert logits.shape == (N, K)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits.exp().sum(-1), torch.ones(N))


def test_a_relaxed_fit_raises_no_enumeration_warning():
    """The relaxed guide has no enumerated site by design: training and scoring it do not
    print Pyro's "no sample sites configured for enumeration" warning."""
    import warnings

    x = torch.rand(40, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vc = VarClust(3, latent_dim=2, hidden=(8,), epochs=1, pretrain_epochs=0, batch_size=20,
                      device="cpu", guide="relaxed").fit(x, progress=False)
        vc.score(x)
    assert not [w for w in caught if "configured for enumeration" in str(w.message)]
