"""The mixture and relaxed guides: their ELBOs by hand, the temperature schedule, recovery."""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from test_recovery import synthetic_mixture
from torch.nn.functional import binary_cross_entropy_with_logits

from varclust import VarClust, cluster_accuracy
from varclust.guides import annealed_temperature

N, DATA_DIM, K, D = 5, 4, 3, 2


def build(guide: str) -> tuple[VarClust, torch.Tensor]:
    """A tiny model whose mixture and guide heads all differ, so every term matters."""
    pyro.set_rng_seed(123)
    vc = VarClust(K, latent_dim=D, hidden=(8,), pretrain_epochs=0, guide=guide, device="cpu")
    vc.build((DATA_DIM,))
    weights = torch.tensor([0.5, 0.3, 0.2])
    loc = torch.tensor([[-1.0, 0.5], [0.7, -0.3], [0.2, 1.2]])
    scale = torch.tensor([[0.8, 1.3], [0.5, 0.9], [1.5, 0.6]])
    vc.model.prior.set_mixture(weights, loc, scale)
    vc.guide.init_from_mixture(weights, loc + 0.1, scale * 1.2)
    with torch.no_grad():  # per-cluster codes that differ from each other
        vc.guide.heads.offset.weight.normal_(0, 0.3)
        vc.guide.heads.offset.bias.normal_(0, 0.3)
    x = torch.rand(N, DATA_DIM, generator=torch.Generator().manual_seed(7))
    return vc, x


def log_px(vc: VarClust, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Bernoulli log p(x | z) written out: z (..., N, D) -> (..., N)."""
    out = vc.model.decoder(z)
    return -binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)


def log_normal(z, loc, scale):
    return (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def test_mixture_guide_elbo_is_the_enumerated_sum():
    vc, x = build("mixture")
    prior = vc.model.prior
    pyro.set_rng_seed(2024)
    loss = TraceEnum_ELBO(max_plate_nesting=1)(vc.model, vc.guide)(x)
    # the same draws: the guide under enumeration gives one z per cluster, shape (K, N, D)
    pyro.set_rng_seed(2024)
    trace = poutine.trace(poutine.enum(vc.guide, first_available_dim=-2)).get_trace(x)
    z = trace.nodes["z"]["value"].detach()
    assert z.shape == (K, N, D)
    with torch.no_grad():
        logits, locs, scales = vc.guide.heads(*vc.guide.encoder(x))
        log_qc = logits.log_softmax(-1).T  # (K, N)
        terms = torch.zeros(K, N)
        for k in range(K):
            zk = z[k]
            terms[k] = (
                prior.weights[k].log()
                + log_normal(zk, prior.loc[k], prior.scale[k])
                + log_px(vc, x, zk)
                - log_qc[k]
                - log_normal(zk, locs[:, k], scales[:, k])
            )
        expected = (log_qc.exp() * terms).sum()
    assert loss.item() == pytest.approx(-expected.item(), abs=1e-4, rel=1e-6)
    # not a coincidence: weighting the clusters equally gives another number
    assert abs((terms.mean(0)).sum().item() - expected.item()) > 1e-2


def log_exp_concrete(y, temperature, logits):
    """log density of y = log w under ExpConcrete(T, alpha = exp(logits)), Maddison et al.
    (2017), written out: y (..., K)."""
    k = y.shape[-1]
    t = torch.as_tensor(temperature)
    score = logits - t * y
    return (math.lgamma(k) + (k - 1) * t.log() + score.sum(-1)
            - k * score.logsumexp(-1))


def test_relaxed_elbo_is_the_relaxed_models_bound_by_hand():
    """For one fixed draw of the Gumbel and Gaussian noise, Pyro's ELBO equals
    log p(x|z) + log p(y) + log p(z|w) - log q(y|x) - log q(z|x,w), y = log w."""
    vc, x = build("relaxed")
    prior = vc.model.prior
    vc.guide.temperature.fill_(0.7)
    vc.model.relax_cluster(0.3)  # the model's own temperature T_p
    pyro.set_rng_seed(99)
    loss = TraceEnum_ELBO(max_plate_nesting=1)(vc.model, vc.guide)(x)
    pyro.set_rng_seed(99)
    trace = poutine.trace(vc.guide).get_trace(x)
    y = trace.nodes["cluster_log_weights"]["value"].detach()
    z = trace.nodes["z"]["value"].detach()
    w = y.exp()
    with torch.no_grad():
        logits, locs, scales = vc.guide.heads(*vc.guide.encoder(x))
        q_loc = (w[..., None] * locs).sum(1)
        q_scale = ((w[..., None] * scales) ** 2).sum(1).sqrt()
        p_loc = w @ prior.loc
        p_scale = (w**2 @ prior.scale**2).sqrt()
        bound = (log_px(vc, x, z)
                 + log_exp_concrete(y, 0.3, prior.weights.log())
                 + log_normal(z, p_loc, p_scale)
                 - log_exp_concrete(y, 0.7, logits)
                 - log_normal(z, q_loc, q_scale))
    assert loss.item() == pytest.approx(-bound.sum().item(), abs=1e-4, rel=1e-6)
    # not the old auxiliary bound: the model's p(z) summed over the discrete cluster differs
    log_joint = prior.weights.log() + torch.stack(
        [log_normal(z, prior.loc[k], prior.scale[k]) for k in range(K)], -1)
    old = log_px(vc, x, z) + log_joint.logsumexp(-1) - log_normal(z, q_loc, q_scale)
    assert abs(old.sum().item() - bound.sum().item()) > 1e-2
    # one pathwise sample carries gradient to the cluster logits, the per-cluster codes and
    # the prior's weights, means and scales
    loss.backward()
    heads = dict(vc.guide.heads.named_parameters())
    for name in ("centre", "log_weight", "offset.weight"):
        assert heads[name].grad is not None and heads[name].grad.abs().sum() > 0, name
    for name, p in prior.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_equal_temperature_concrete_kl_ignores_the_temperature_and_grows_with_confidence():
    """The derivation in varclust.guides.relaxed: with T_p = T_q, log q(y) - log p(y) for one
    Gumbel draw g is sum(l - a) + K lse(a - l - g) - K lse(-g), whatever the temperature, and
    about the logit gap G for a confident guide; T_p << T_q flattens its growth with G."""
    from varclust.model.relaxed_categorical import ExpRelaxedCategorical

    g = torch.distributions.Gumbel(0.0, 1.0).sample((2000, 4))
    a = torch.full((4,), -math.log(4))
    for gap in (5.0, 40.0):
        logits = torch.tensor([gap, 0.0, 0.0, 0.0])
        values = []
        for t in (0.1, 1.0, 3.0):
            y = ((logits + g) / t).log_softmax(-1)  # the guide's reparameterised draw
            values.append(ExpRelaxedCategorical(torch.tensor(t), logits=logits).log_prob(y)
                          - ExpRelaxedCategorical(torch.tensor(t), logits=a).log_prob(y))
        closed = (logits - a).sum() + 4 * (a - logits - g).logsumexp(-1) - 4 * (-g).logsumexp(-1)
        for v in values:
            torch.testing.assert_close(v, closed, atol=2e-3, rtol=1e-4)
        if gap == 40.0:
            assert float(closed.mean()) == pytest.approx(gap, rel=0.1)

    def kl_estimate(gap: float, t_q: float, t_p: float) -> float:
        logits = torch.tensor([gap, 0.0, 0.0, 0.0])
        y = ((logits + g) / t_q).log_softmax(-1)
        q = ExpRelaxedCategorical(torch.tensor(t_q), logits=logits).log_prob(y)
        p = ExpRelaxedCategorical(torch.tensor(t_p), logits=a).log_prob(y)
        return float((q - p).mean())

    # 40 more nats of confidence cost about 40 nats at equal temperatures, under 1 nat (at most
    # about 40 T_p / T_q) with a cold prior
    assert kl_estimate(80, 1.0, 1.0) - kl_estimate(40, 1.0, 1.0) == pytest.approx(40, rel=0.05)
    assert 0 < kl_estimate(80, 1.0, 0.01) - kl_estimate(40, 1.0, 0.01) < 1.0


def test_the_relaxed_model_tends_to_the_mixture_at_a_corner():
    """w = e_k makes p(z | w) component k of the Gaussian mixture."""
    vc, _ = build("relaxed")
    prior = vc.model.prior
    params = prior.point_parameters()
    z = torch.randn(4, D)
    for k in range(K):
        w = torch.nn.functional.one_hot(torch.full((4,), k), K).float()
        torch.testing.assert_close(prior.relaxed_component(params, w).log_prob(z),
                                   prior.component(params, torch.full((4,), k)).log_prob(z))


def test_relaxed_guide_refuses_a_prior_without_a_relaxed_form():
    vc = VarClust(3, latent_dim=2, hidden=(8,), guide="relaxed", prior="normal", device="cpu")
    with pytest.raises(ValueError, match="no relaxed form.*prior='gmm'"):
        vc.build((4,))


def test_relaxed_temperature_follows_the_schedule_and_samples_lie_on_the_simplex():
    x = torch.rand(30, 6, generator=torch.Generator().manual_seed(0))
    vc = VarClust(3, latent_dim=2, hidden=(8,), guide="relaxed", epochs=5, pretrain_epochs=1,
                  batch_size=10, temperature=2.0, temperature_decay=0.5, temperature_min=0.3,
                  device="cpu")
    vc.fit(x, progress=False)
    expected = [2.0, 1.0, 0.5, 0.3, 0.3]
    assert [round(h["temperature"], 6) for h in vc.history] == expected
    assert [annealed_temperature(e, 2.0, 0.5, 0.3) for e in range(5)] == expected

    def draws(temperature):
        vc.guide.temperature.fill_(temperature)
        pyro.set_rng_seed(0)
        trace = poutine.trace(vc.guide).get_trace(x)
        return trace.nodes["cluster_log_weights"]["value"].detach().exp()

    cold, hot = draws(0.05), draws(20.0)
    for w in (cold, hot):
        assert w.shape == (30, 3)
        assert float(w.min()) >= 0.0
        torch.testing.assert_close(w.sum(-1), torch.ones(30), atol=1e-5, rtol=0)
    # low temperature: nearly one-hot; high temperature: spread out
    assert float(cold.max(-1).values.mean()) > 0.95
    assert float(hot.max(-1).values.mean()) < 0.8


@pytest.mark.parametrize("guide", ["marginal", "mixture", "relaxed"])
def test_each_guide_recovers_a_well_separated_mixture(guide):
    x, y = synthetic_mixture(3, 150, 24, seed=3, binary=True)  # the foundation's data
    vc = VarClust(3, latent_dim=2, hidden=(32, 32), guide=guide, epochs=8, pretrain_epochs=15,
                  batch_size=64, seed=1, device="cpu")
    vc.fit(x, y, progress=False)
    assert vc.history[-1]["elbo"] > vc.history[0]["elbo"]
    assert cluster_accuracy(y, vc.predict(x).labels) >= 0.95
    assert all(np.isfinite(h["elbo"]) for h in vc.history)
    if guide == "relaxed":  # q(c|x), the read-out, agrees with the model's p(c | z = E[z|x])
        with torch.no_grad():
            xt = torch.as_tensor(x)
            q = vc.guide.cluster_logits(xt, vc.model.prior).argmax(-1)
            p = vc.model.prior.log_joint(vc.guide.encode(xt)[0]).argmax(-1)
        assert float((q == p).float().mean()) >= 0.95


def test_relaxed_guide_with_equal_temperatures_loses_the_pretrained_clusters():
    """The reason for prior_temperature: T_p = T_q charges a nat per nat of logit gap, and the
    fit gives up the pretrained clustering (module docstring of varclust.guides.relaxed)."""
    x, y = synthetic_mixture(3, 150, 24, seed=3, binary=True)
    accs = {}
    for prior_temperature in (0.5, 0.01):
        vc = VarClust(3, latent_dim=2, hidden=(32, 32), guide="relaxed", epochs=8,
                      pretrain_epochs=15, batch_size=64, seed=1, device="cpu",
                      temperature=0.5, temperature_min=0.5, prior_temperature=prior_temperature)
        vc.fit(x, y, progress=False)
        accs[prior_temperature] = cluster_accuracy(y, vc.predict(x).labels)
    assert accs[0.01] >= 0.95 and accs[0.5] < accs[0.01] - 0.2, accs


@pytest.mark.parametrize("seed, extra", [
    (0, {}), (1, {}), (2, {}), (3, {}),
    (0, {"neighbour_consistency": 1.0, "fit_mixture_at_start": True}),
    (1, {"neighbour_consistency": 1.0, "fit_mixture_at_start": True}),
])
def test_relaxed_guide_recovers_a_mixture_from_scratch(seed, extra):
    """No pretraining: KL warm-up and the cluster-information term (outside the ELBO) from a
    random start (and, opt-in, the neighbour term with the mixture started at the untrained
    codes); q(c|x) then agrees with the model's p(c|z)."""
    x, y = synthetic_mixture(3, 150, 24, seed=3, binary=True)
    vc = VarClust(3, latent_dim=2, hidden=(32, 32), guide="relaxed", epochs=40, pretrain_epochs=0,
                  batch_size=32, lr_decay=1.0, cluster_information=3.0, kl_warmup_epochs=10,
                  seed=seed, device="cpu", **extra)
    vc.fit(x, progress=False)
    assert cluster_accuracy(y, vc.predict(x).labels) >= 0.95
    with torch.no_grad():
        xt = torch.as_tensor(x)
        q = vc.guide.cluster_logits(xt, vc.model.prior).argmax(-1)
        p = vc.model.prior.log_joint(vc.guide.encode(xt)[0]).argmax(-1)
    assert float((q == p).float().mean()) >= 0.95
