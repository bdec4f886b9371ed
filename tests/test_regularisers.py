"""Terms outside the ELBO for fits from scratch, and the KL warm-up: values by hand, where
they act, and that the reported ELBO never includes them."""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine

from varclust import FitConfig, VarClust
from varclust.inference.kl_warmup import KLScale, kl_warmup_weight
from varclust.inference.regularisers import (
    AugmentationConsistency,
    ClusterInformation,
    NeighbourConsistency,
    VirtualAdversarialSmoothing,
    cluster_entropies,
    cluster_information,
    kl_categorical,
    nearest_neighbours,
    neighbour_distances,
    random_shift,
    regularisers_of,
    terms_outside_elbo,
)


def test_cluster_information_by_hand():
    q = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    mean = q.mean(0)

    def entropy(p):
        return -sum(float(v) * math.log(float(v)) for v in p)

    expected = entropy(mean) - np.mean([entropy(row) for row in q])
    assert float(cluster_information(q.log())) == pytest.approx(expected, abs=1e-6)
    # identical posteriors carry no information; confident balanced ones carry log K
    assert float(cluster_information(q[:1].expand(5, 2).log())) == pytest.approx(0, abs=1e-6)
    onehot = torch.eye(3).clamp_min(1e-12)
    assert float(cluster_information(onehot.log())) == pytest.approx(math.log(3), abs=1e-5)


def test_cluster_balance_weighs_the_marginal_entropy_by_hand():
    q = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])

    def entropy(p):
        return -sum(float(v) * math.log(float(v)) for v in p)

    marginal, conditional = entropy(q.mean(0)), np.mean([entropy(row) for row in q])
    balance, uncertainty = cluster_entropies(q.log())
    assert float(4 * balance - uncertainty) == pytest.approx(4 * marginal - conditional, abs=1e-6)
    term = ClusterInformation.from_config(
        FitConfig(cluster_information=2.0, cluster_balance=4.0), None)
    loss = term.loss(None, None, None, None, num_data=10, log_q=q.log())
    assert float(loss) == pytest.approx(-2.0 * 10 * (4 * marginal - conditional), rel=1e-6)
    confidence = ClusterInformation.from_config(
        FitConfig(cluster_information=2.0, cluster_balance=0.0), None)
    loss = confidence.loss(None, None, None, None, num_data=10, log_q=q.log())
    assert float(loss) == pytest.approx(2.0 * 10 * conditional, rel=1e-6)
    with pytest.raises(ValueError, match="cluster_balance must be >= 0"):
        FitConfig(cluster_information=1.0, cluster_balance=-0.5)


def test_random_shift_moves_each_image_by_at_most_one_pixel():
    torch.manual_seed(0)
    x = torch.zeros(50, 1, 6, 6)
    x[:, 0, 2, 3] = 1.0  # one lit pixel away from the edges
    moved = random_shift(x, 1)
    assert moved.shape == x.shape and torch.equal(moved.sum((1, 2, 3)), torch.ones(50))
    rows, cols = moved[:, 0].nonzero(as_tuple=True)[1:]
    assert set(rows.tolist()) == {1, 2, 3} and set(cols.tolist()) == {2, 3, 4}


def test_kl_warmup_weight_schedule():
    assert [kl_warmup_weight(e, 4) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert kl_warmup_weight(0, 0) == 1.0


def test_kl_weight_scales_every_latent_site_and_leaves_the_likelihood():
    vc = VarClust(3, latent_dim=2, hidden=(8,), guide="relaxed", device="cpu")
    vc.build((4,))
    x = torch.rand(5, 4)
    with KLScale(0.25):
        guide_trace = poutine.trace(vc.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(vc.model, trace=guide_trace)).get_trace(x)
    for name in ("cluster_log_weights", "z"):
        assert guide_trace.nodes[name]["scale"] == pytest.approx(0.25)
        assert model_trace.nodes[name]["scale"] == pytest.approx(0.25)
    assert model_trace.nodes["x"]["scale"] == pytest.approx(1.0)


def test_the_config_turns_the_terms_on_and_refuses_bad_values():
    assert regularisers_of(FitConfig()) == []
    config = FitConfig(cluster_information=1.0, augmentation_consistency=0.5,
                       virtual_adversarial=2.0, adversarial_radius=0.5,
                       neighbour_consistency=3.0, neighbours=2)
    names = [t.name for t in regularisers_of(config, torch.rand(10, 1, 4, 4))]
    assert names == terms_outside_elbo(config) == [
        "cluster_information", "augmentation_consistency", "virtual_adversarial",
        "neighbour_consistency"]
    with pytest.raises(ValueError, match="neighbours in the data set"):
        regularisers_of(config)
    with pytest.raises(ValueError, match="neighbour_consistency must be >= 0"):
        FitConfig(neighbour_consistency=-1.0)
    with pytest.raises(ValueError, match="neighbours must be >= 1"):
        FitConfig(neighbours=0)
    with pytest.raises(ValueError, match="virtual_adversarial must be >= 0"):
        FitConfig(virtual_adversarial=-1.0)
    with pytest.raises(ValueError, match="adversarial_radius must be > 0"):
        FitConfig(virtual_adversarial=1.0, adversarial_radius=0.0)
    with pytest.raises(ValueError, match="cluster_information must be >= 0"):
        FitConfig(cluster_information=-1.0)
    with pytest.raises(ValueError, match="kl_warmup_epochs must be >= 0"):
        FitConfig(kl_warmup_epochs=-2)
    with pytest.raises(ValueError, match="augmentation_consistency must be >= 0"):
        FitConfig(augmentation_consistency=-0.1)


@pytest.mark.parametrize("guide", ["marginal", "mixture", "relaxed"])
def test_the_terms_move_the_parameters_but_not_the_reported_elbo(guide):
    """A step with a regulariser changes the parameters differently from one without it, and
    step() returns the same -ELBO for both (the term stays outside the reported ELBO)."""
    from varclust.inference.svi import SVITrainer

    x = torch.rand(16, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    results = []
    for terms in ([], [ClusterInformation(5.0), AugmentationConsistency(5.0),
                       VirtualAdversarialSmoothing(5.0, 0.5), NeighbourConsistency(5.0, x, 3)]):
        pyro.set_rng_seed(0)
        vc = VarClust(3, latent_dim=2, hidden=(8,), guide=guide, device="cpu")
        vc.build((1, 6, 6))
        trainer = SVITrainer(vc.model, vc.guide, 1e-2, regularisers=terms)
        pyro.set_rng_seed(5)
        loss = trainer.step(x, torch.arange(16), 16)
        params = torch.cat([p.detach().flatten() for p in trainer.elbo.parameters()])
        results.append((float(loss), params))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    assert not torch.allclose(results[0][1], results[1][1])


def test_terms_weight_scales_the_terms_outside_the_elbo():
    """trainer.terms_weight w multiplies the terms' sum: w = 0 steps as without them, w = 0.5
    on a term of weight 5 steps as the term of weight 2.5; the reported ELBO never moves."""
    from varclust.inference.svi import SVITrainer

    x = torch.rand(16, 1, 6, 6, generator=torch.Generator().manual_seed(1))

    def step(terms, weight):
        pyro.set_rng_seed(0)
        vc = VarClust(3, latent_dim=2, hidden=(8,), guide="relaxed", device="cpu")
        vc.build((1, 6, 6))
        trainer = SVITrainer(vc.model, vc.guide, 1e-2, regularisers=terms)
        trainer.terms_weight = weight
        pyro.set_rng_seed(5)
        loss = trainer.step(x, torch.arange(16), 16)
        return float(loss), torch.cat([p.detach().flatten() for p in trainer.elbo.parameters()])

    plain_loss, plain = step([], 1.0)
    off_loss, off = step([ClusterInformation(5.0)], 0.0)
    half_loss, half = step([ClusterInformation(5.0)], 0.5)
    _, direct = step([ClusterInformation(2.5)], 1.0)
    _, full = step([ClusterInformation(5.0)], 1.0)
    assert torch.equal(plain, off)
    assert torch.allclose(half, direct, atol=1e-6)
    assert not torch.allclose(half, full)
    assert plain_loss == pytest.approx(off_loss, rel=1e-6) == pytest.approx(half_loss, rel=1e-6)


@pytest.mark.parametrize("method", ["svi", "em"])
def test_warm_up_terms_follows_the_kl_weight_of_each_epoch(monkeypatch, method):
    from varclust.inference.svi import SVITrainer

    seen = []
    original = SVITrainer.epoch

    def recording(self, *args, **kwargs):
        seen.append(self.terms_weight)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SVITrainer, "epoch", recording)
    x = torch.rand(40, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    warmup = {"svi": {"epochs": 3, "kl_warmup_epochs": 4},
              "em": {"em_iterations": 3, "kl_warmup_iterations": 3, "m_step_epochs": 1}}[method]
    for warm_up_terms, expected in ((True, [0.25, 0.5, 0.75]), (False, [1.0, 1.0, 1.0])):
        seen.clear()
        VarClust(3, latent_dim=2, hidden=(8,), pretrain_epochs=0, batch_size=20, device="cpu",
                 method=method, cluster_information=1.0, warm_up_terms=warm_up_terms,
                 **warmup).fit(x, progress=False)
        assert seen == pytest.approx(expected)


def test_warm_up_terms_without_a_warm_up_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="kl_warmup_epochs is 0.*set kl_warmup_epochs > 0"):
        FitConfig(cluster_information=1.0, warm_up_terms=True)
    with pytest.raises(ValueError, match="kl_warmup_iterations is 0"):
        FitConfig(method="em", cluster_information=1.0, warm_up_terms=True)
    assert FitConfig(kl_warmup_epochs=3, warm_up_terms=True).warm_up_terms


def test_kl_categorical_by_hand():
    p, q = torch.tensor([[0.7, 0.3]]), torch.tensor([[0.4, 0.6]])
    expected = 0.7 * math.log(0.7 / 0.4) + 0.3 * math.log(0.3 / 0.6)
    assert float(kl_categorical(p.log(), q.log())[0]) == pytest.approx(expected, abs=1e-6)


class _LinearClusterHead(torch.nn.Module):
    """q(c | x) = softmax(W x) on flat data: the adversarial direction is known in closed form
    for two clusters (along the difference of W's rows)."""

    def __init__(self, weight):
        super().__init__()
        self.weight = torch.nn.Parameter(weight)

    def cluster_logits(self, x, prior):
        return torch.log_softmax(x @ self.weight.T, -1)


def test_virtual_adversarial_perturbation_has_the_radius_and_the_worst_direction():
    """With two clusters and q(c | x) = softmax(W x), KL(q(x) || q(x + r)) grows fastest along
    +-(w_1 - w_0): one power-iteration step finds that axis from a random start, at the radius,
    and moves q more than a random perturbation of the same norm."""
    torch.manual_seed(0)
    weight = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    head = _LinearClusterHead(weight)
    x = torch.randn(64, 3) * 0.1
    term = VirtualAdversarialSmoothing(1.0, radius=0.3)
    target = head.cluster_logits(x, None).detach()
    r = term.perturbation(head, None, x, target)
    assert torch.allclose(r.norm(dim=1), torch.full((64,), 0.3), atol=1e-5)
    axis = (weight[1] - weight[0]) / (weight[1] - weight[0]).norm()
    assert torch.allclose((r @ axis).abs(), torch.full((64,), 0.3), atol=1e-3)
    random = 0.3 * torch.nn.functional.normalize(torch.randn(64, 3), dim=1)
    adversarial = kl_categorical(target, head.cluster_logits(x + r, None)).mean()
    assert adversarial > 2 * kl_categorical(target, head.cluster_logits(x + random, None)).mean()
    # the loss is weight * N * that mean KL (a fresh start finds the same axis, perhaps the
    # other sign, where the KL differs at third order)
    loss = VirtualAdversarialSmoothing(2.0, radius=0.3).loss(head, None, x, torch.arange(64),
                                                              100, target)
    assert float(loss) == pytest.approx(2.0 * 100 * float(adversarial), rel=2e-2)


def test_neighbour_distances_are_the_distance_to_the_tth_nearest_other_datum():
    """IMSAT's sigma_t by brute force on flat data, and exact duplicates among the others."""
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    distances = torch.cdist(x, x) + torch.diag(torch.full((5,), float("inf")))
    for t in (1, 2, 3):
        expected = distances.sort(dim=1).values[:, t - 1]
        assert torch.allclose(neighbour_distances(x, t), expected)


def test_virtual_adversarial_radius_per_datum_follows_the_neighbour_distances():
    """adversarial_radius_scale alpha: each datum's perturbation has norm alpha * sigma_10 of
    that datum (the batch's indices pick them), not the fixed radius; a datum with 10 exact
    copies (sigma_10 = 0) is refused with the fix named."""
    torch.manual_seed(1)
    data = torch.cat([torch.randn(30, 3), 5.0 + 3.0 * torch.randn(30, 3)])
    config = FitConfig(virtual_adversarial=1.0, adversarial_radius_scale=0.25)
    (term,) = regularisers_of(config, data)
    sigma = neighbour_distances(data, 10)
    assert torch.allclose(term.radii, 0.25 * sigma)
    assert float(sigma[30:].mean()) > 2 * float(sigma[:30].mean())  # the sparse group's larger
    head = _LinearClusterHead(torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    indices = torch.tensor([3, 40, 7, 55])
    x = data[indices]
    moved = term.move(head, None, x, indices, head.cluster_logits(x, None).detach())
    assert torch.allclose((moved - x).norm(dim=1), 0.25 * sigma[indices], atol=1e-5)
    # alpha 0: every datum has the fixed radius
    (fixed,) = regularisers_of(FitConfig(virtual_adversarial=1.0, adversarial_radius=0.3), data)
    assert fixed.radii is None
    moved = fixed.move(head, None, x, indices, head.cluster_logits(x, None).detach())
    assert torch.allclose((moved - x).norm(dim=1), torch.full((4,), 0.3), atol=1e-5)
    with pytest.raises(ValueError, match="adversarial_radius_scale=0"):
        regularisers_of(config, torch.zeros(12, 3))
    with pytest.raises(ValueError, match="adversarial_radius_scale must be >= 0"):
        FitConfig(virtual_adversarial=1.0, adversarial_radius_scale=-0.1)


def test_augmentation_consistency_refuses_flat_data():
    vc = VarClust(3, latent_dim=2, hidden=(8,), device="cpu")
    vc.build((4,))
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\).*augmentation_consistency=0"):
        AugmentationConsistency(1.0).loss(vc.guide, vc.model.prior, torch.rand(3, 4),
                                          torch.arange(3), 3, torch.zeros(3, 3))


def test_metrics_json_names_the_terms_outside_the_elbo(tmp_path):
    import json

    x = torch.rand(40, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    y = np.arange(40) % 3
    VarClust(3, latent_dim=2, hidden=(8,), epochs=2, pretrain_epochs=0, batch_size=20,
             device="cpu", guide="relaxed", cluster_information=1.0,
             augmentation_consistency=0.5, virtual_adversarial=1.0, neighbour_consistency=1.0,
             kl_warmup_epochs=4).fit(x, y, out_dir=tmp_path, progress=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["objective_terms_outside_elbo"] == [
        "cluster_information", "augmentation_consistency", "virtual_adversarial",
        "neighbour_consistency"]
    epochs = metrics["history"]
    assert [h["kl_weight"] for h in epochs] == [0.25, 0.5]
    assert all(0 <= h["cluster_information_nats"] <= math.log(3) + 1e-6 for h in epochs)
    plain = tmp_path / "plain"
    VarClust(3, latent_dim=2, hidden=(8,), epochs=1, pretrain_epochs=0, batch_size=20,
             device="cpu").fit(x, out_dir=plain, progress=False)
    plain_metrics = json.loads((plain / "metrics.json").read_text())
    assert plain_metrics["objective_terms_outside_elbo"] == []
    assert "kl_weight" not in plain_metrics["history"][0]


def test_nearest_neighbours_by_hand():
    """Points on a line at 0, 1, 3, 7, 8: each one's nearest others, nearest first; an exact
    duplicate counts as a neighbour at distance 0 and the datum itself never does."""
    line = torch.tensor([0.0, 1.0, 3.0, 7.0, 8.0])[:, None]
    assert nearest_neighbours(line, 2).tolist() == [[1, 2], [0, 2], [1, 0], [4, 2], [3, 2]]
    twins = torch.tensor([0.0, 0.0, 5.0])[:, None]
    assert nearest_neighbours(twins, 1).tolist() == [[1], [0], [1]] or \
        nearest_neighbours(twins, 1).tolist() == [[1], [0], [0]]
    with pytest.raises(ValueError, match="neighbours must be between 1 and N - 1 = 4"):
        nearest_neighbours(line, 5)


def test_nearest_neighbours_project_wide_data_on_principal_components():
    """Two tight groups in 100 dimensions (more than the 50 components kept): every datum's
    neighbours lie in its own group."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(2, 100, generator=gen) * 5
    group = torch.arange(40) % 2
    data = centres[group] + 0.1 * torch.randn(40, 100, generator=gen)
    found = nearest_neighbours(data.view(40, 1, 10, 10), 5)
    assert found.shape == (40, 5) and bool((group[found] == group[:, None]).all())
    assert not bool((found == torch.arange(40)[:, None]).any())


def test_neighbour_consistency_moves_each_datum_to_one_of_its_neighbours():
    """move() returns, for each batch datum, a datum of the data set listed among its k
    neighbours; the loss is nu * N * mean KL(q(x) || q(x')) for those x'."""
    torch.manual_seed(0)
    data = torch.tensor([0.0, 1.0, 3.0, 7.0, 8.0, 20.0])[:, None]
    term = NeighbourConsistency(2.0, data, neighbours=2)
    indices = torch.tensor([0, 3, 5, 3])
    allowed = [{1.0, 3.0}, {8.0, 3.0}, {8.0, 7.0}, {8.0, 3.0}]
    for _ in range(20):
        moved = term.move(None, None, data[indices], indices, None)
        assert moved.shape == (4, 1)
        assert all(float(v) in ok for v, ok in zip(moved[:, 0], allowed))
    head = _LinearClusterHead(torch.tensor([[1.0], [-1.0]]))
    target = head.cluster_logits(data[indices], None).detach()
    torch.manual_seed(3)
    loss = term.loss(head, None, data[indices], indices, 50, target)
    torch.manual_seed(3)
    moved = term.move(None, None, data[indices], indices, None)
    expected = 2.0 * 50 * kl_categorical(target, head.cluster_logits(moved, None)).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("at_start", [True, False])
def test_fit_mixture_at_start_fits_the_untrained_encoders_codes(monkeypatch, at_start):
    """From scratch with ``fit_mixture_at_start``, the prior starts at scikit-learn's
    GaussianMixture of the untrained encoder's codes (what pretraining would start it at,
    without the pretraining); without it, no mixture is fitted before training."""
    from varclust.inference import warm_start
    from varclust.inference.prediction import encode_means
    from varclust.model.mixture_fit import fit_mixture_to_codes

    seen = []
    real = warm_start.init_mixture

    def spy(fit, x, supervision):
        codes = encode_means(fit.guide, x)
        real(fit, x, supervision)
        seen.append((codes, fit.model.prior.loc.detach().clone()))

    monkeypatch.setattr(warm_start, "init_mixture", spy)
    x = torch.rand(60, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    VarClust(3, latent_dim=2, hidden=(8,), epochs=1, pretrain_epochs=0, batch_size=20,
             device="cpu", seed=7, fit_mixture_at_start=at_start).fit(x, progress=False)
    assert len(seen) == int(at_start)
    if at_start:
        codes, loc = seen[0]
        expected = fit_mixture_to_codes(codes, 3, seed=7)[1]
        assert torch.allclose(loc, expected, atol=1e-6)

