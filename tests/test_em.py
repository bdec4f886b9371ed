"""The EM loop: closed-form E-step against scikit-learn, monotone likelihood, frozen prior in the
M-step, recovery of a synthetic mixture, checkpoints and metrics of EM runs."""

import json
import logging
import math

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from varclust import VarClust, cluster_accuracy
from varclust.inference.em import ClusterDDPMEStep, VaDEEStep, e_step, fit_em, make_e_step
from varclust.inference.loop import make_trainer
from varclust.model.gmm import DiagonalMixture, diagonal_mixture_em, mixture_log_likelihood
from varclust.model.priors import GaussianMixturePrior


def mixture_codes(seed: int, n_per: int = 200):
    """Codes (3 * n_per, 3) from three diagonal Gaussians of different weights and spreads."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0, 0.0], [3.0, -2.0, 1.0], [-2.5, 2.5, -1.5]])
    spreads = torch.tensor([[1.0, 0.5, 0.8], [0.6, 1.2, 0.4], [0.9, 0.7, 1.5]])
    sizes = [n_per, 2 * n_per, n_per // 2]
    parts = [centres[k] + spreads[k] * torch.randn(sizes[k], 3, generator=g) for k in range(3)]
    return torch.cat(parts).double()


# a deliberately poor start: the algorithm has to move every parameter
INIT = DiagonalMixture(
    weights=torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64),
    loc=torch.tensor([[1.0, 1.0, 0.0], [2.0, -1.0, 0.0], [-1.0, 1.0, -1.0]], dtype=torch.float64),
    scale=torch.tensor([[1.5, 1.0, 1.0], [1.0, 2.0, 1.0], [2.0, 1.0, 0.7]], dtype=torch.float64),
)


def sklearn_after(codes: torch.Tensor, iterations: int, reg_covar: float) -> GaussianMixture:
    gmm = GaussianMixture(
        3, covariance_type="diag", weights_init=INIT.weights.numpy(),
        means_init=INIT.loc.numpy(), precisions_init=(1 / INIT.scale**2).numpy(),
        max_iter=iterations, tol=0.0, reg_covar=reg_covar, n_init=1, random_state=0,
    )
    with pytest.warns(ConvergenceWarning):  # tol=0: it runs all iterations, then says so
        gmm.fit(codes.numpy())
    return gmm


@pytest.mark.parametrize("iterations", [1, 7])
def test_e_step_update_equals_sklearn_gaussian_mixture(iterations):
    codes = mixture_codes(0)
    reg = 1e-3
    mixture, _ = diagonal_mixture_em(codes, INIT, iterations, reg_covar=reg, min_weight=0.0)
    gmm = sklearn_after(codes, iterations, reg)
    np.testing.assert_allclose(mixture.weights.numpy(), gmm.weights_, atol=1e-4)
    np.testing.assert_allclose(mixture.loc.numpy(), gmm.means_, atol=1e-4)
    np.testing.assert_allclose(mixture.scale.numpy() ** 2, gmm.covariances_, atol=1e-4)
    # the start was poor: the update really moved the parameters
    assert np.abs(gmm.means_ - INIT.loc.numpy()).max() > 0.3

    # written into the model's prior in place (float32 parameters, same values)
    prior = GaussianMixturePrior(3, 3)
    prior.set_mixture(INIT.weights, INIT.loc, INIT.scale)
    params_before = [p for p in prior.parameters()]
    e_step(prior, codes.float(), iterations, reg_covar=reg, min_weight=0.0)
    assert all(a is b for a, b in zip(prior.parameters(), params_before))  # updated in place
    np.testing.assert_allclose(prior.weights.detach().numpy(), gmm.weights_, atol=1e-4)
    np.testing.assert_allclose(prior.loc.detach().numpy(), gmm.means_, atol=1e-4)
    np.testing.assert_allclose(prior.scale.detach().numpy() ** 2, gmm.covariances_, atol=1e-4)


def test_e_step_never_decreases_the_codes_log_likelihood():
    codes = mixture_codes(1)
    mixture, history = diagonal_mixture_em(codes, INIT, 40, reg_covar=1e-6, min_weight=0.0)
    assert len(history) == 41
    steps = np.diff(history)
    assert np.all(steps >= -1e-9 * np.abs(history[1:])), steps.min()
    assert history[-1] > history[0] + 0.5  # and it did climb from the poor start
    assert history[-1] == pytest.approx(mixture_log_likelihood(codes, mixture))
    # the likelihood it reports is the mixture's mean log-density of the codes
    gmm = sklearn_after(codes, 40, 1e-6)
    assert history[-1] == pytest.approx(gmm.score(codes.numpy()), abs=1e-6)


def test_e_step_keeps_a_dying_component_alive_and_says_so(caplog):
    codes = mixture_codes(2)
    far = DiagonalMixture(INIT.weights, INIT.loc.clone(), INIT.scale)
    far.loc[2] = torch.tensor([60.0, 60.0, 60.0])  # no code is anywhere near component 2
    with caplog.at_level(logging.WARNING, logger="varclust"):
        mixture, _ = diagonal_mixture_em(codes, far, 5, min_weight=1e-3)
    assert "component(s) [2]" in caplog.text
    assert float(mixture.weights[2]) == pytest.approx(1e-3)
    torch.testing.assert_close(mixture.loc[2], far.loc[2].float())  # kept where it was
    assert float(mixture.weights.sum()) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 1 iteration"):
        diagonal_mixture_em(codes, INIT, 0)
    with pytest.raises(ValueError, match="min_weight"):
        diagonal_mixture_em(codes, INIT, 1, min_weight=0.5)


def binary_prototypes(num_clusters: int, per_cluster: int, dim: int, seed: int):
    """Binary data: K random prototype patterns with 8% of the bits flipped per datum."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(num_clusters, dim, generator=g) < 0.5
    y = torch.arange(num_clusters).repeat_interleave(per_cluster)
    flips = torch.rand(len(y), dim, generator=g) < 0.08
    x = (prototypes[y] ^ flips).float()
    order = torch.randperm(len(y), generator=g)
    return x[order].numpy(), y[order].numpy()


def test_em_with_the_mlp_decoder_recovers_a_synthetic_mixture(tmp_path):
    x, y = binary_prototypes(3, 150, 32, seed=3)
    vc = VarClust(3, method="em", latent_dim=2, hidden=(32, 32), pretrain_epochs=15,
                  em_iterations=6, m_step_epochs=2, e_step_iterations=5, batch_size=64,
                  seed=3, device="cpu")
    vc.fit(x, y, out_dir=tmp_path, progress=False)
    assert cluster_accuracy(y, vc.predict(x).labels) >= 0.95
    assert [h["iteration"] for h in vc.history] == list(range(1, 7))
    assert vc.history[-1]["acc"] >= 0.95
    assert vc.history[-1]["elbo"] > vc.history[0]["elbo"]
    assert all(np.isfinite(h["loglik"]) for h in vc.history)

    # per-iteration metrics on disk, checkpoint loadable with weights_only=True
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["method"] == "em"
    assert [h["iteration"] for h in metrics["history"]] == list(range(1, 7))
    assert {"loglik", "elbo", "m_step_seconds", "e_step_seconds", "acc"} <= set(
        metrics["history"][0])
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert payload["epoch"] == 6
    again = VarClust.load(tmp_path, device="cpu")
    np.testing.assert_array_equal(again.predict(x).labels, vc.predict(x).labels)

    # resume: two more iterations continue the history
    more = VarClust(config=vc.config.replace(em_iterations=8))
    more.fit(x, y, out_dir=tmp_path, resume=True, progress=False)
    assert [h["iteration"] for h in more.history] == list(range(1, 9))


def test_the_m_step_trains_the_networks_and_leaves_the_prior_alone():
    x, _ = binary_prototypes(3, 40, 16, seed=4)
    vc = VarClust(3, method="em", latent_dim=2, hidden=(16,), pretrain_epochs=0, device="cpu")
    data = torch.from_numpy(x)
    vc.build((16,))
    prior = vc.model.prior
    from varclust.inference.svi import SVITrainer

    trainer = SVITrainer(vc.model, vc.guide, learning_rate=1e-2)
    prior_before = {k: v.clone() for k, v in prior.state_dict().items()}
    encoder_before = [p.clone() for p in vc.guide.parameters()]
    seen = []

    def on_m_step(i, loss):  # during the M-step the prior must not move
        seen.append(all(torch.equal(v, prior_before[k]) for k, v in prior.state_dict().items()))

    records = fit_em(vc.model, vc.guide, data, trainer, iterations=1, m_step_epochs=2,
                     e_step=VaDEEStep(3), batch_size=32, seed=0, on_m_step=on_m_step)
    assert len(seen) == 2 * 4 and all(seen)
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, vc.guide.parameters()))
    # the E-step then did change the prior, and the prior is trainable again afterwards
    assert not torch.equal(prior.loc, prior_before["loc_unconstrained"])
    assert all(p.requires_grad for p in prior.parameters())
    assert records[0]["loglik"] >= records[0]["loglik_before"]


def heterogeneous_variances(codes: torch.Tensor, seed: int) -> torch.Tensor:
    """q's variances (N, D), different per datum and dimension, between 0.01 and 1.2."""
    g = torch.Generator().manual_seed(seed)
    return (0.01 + 1.2 * torch.rand(codes.shape, generator=g, dtype=torch.float64))


def vade_bound(codes, var, weights, loc, scale, resp):
    """L(theta, r) of model/gmm.py's docstring, mean per datum, written out."""
    mix_var = scale**2
    expected_log_n = -0.5 * (((codes[:, None] - loc[None]) ** 2 + var[:, None]) / mix_var[None]
                             + mix_var.log()[None] + math.log(2 * math.pi)).sum(-1)
    terms = resp * (weights.log()[None] + expected_log_n - resp.clamp_min(1e-300).log())
    return terms.sum(-1).mean()


def vade_responsibilities(codes, var, mixture):
    """r_nk ∝ pi_k N(m_n | mu_k, sigma_k) exp(-1/2 sum_d v_nd / sigma_kd^2), written out."""
    comp = torch.distributions.Normal(mixture.loc, mixture.scale).log_prob(codes[:, None]).sum(-1)
    log_r = mixture.weights.log() + comp - 0.5 * (var[:, None] / mixture.scale**2).sum(-1)
    return (log_r - log_r.logsumexp(-1, keepdim=True)).exp()


def test_the_vade_e_step_is_coordinate_ascent_on_its_reported_objective():
    codes = mixture_codes(5)
    var = heterogeneous_variances(codes, 5)
    reg = 1e-4
    mixture, history = diagonal_mixture_em(codes, INIT, 40, reg_covar=reg, min_weight=0.0,
                                           code_var=var)
    steps = np.diff(history)
    assert np.all(steps >= -1e-12 * np.abs(history[1:])), steps.min()  # never decreases
    assert history[-1] > history[0] + 0.5
    # what it reports is max_r L(theta, r) = F(theta), with reg_covar as extra code variance
    m64 = DiagonalMixture(*(t.double() for t in (mixture.weights, mixture.loc, mixture.scale)))
    assert history[-1] == pytest.approx(mixture_log_likelihood(codes, m64, var + reg), abs=1e-5)
    r = vade_responsibilities(codes, var + reg, m64)
    assert history[-1] == pytest.approx(
        float(vade_bound(codes, var + reg, m64.weights, m64.loc, m64.scale, r)), abs=1e-5)

    # one step: the new parameters maximise L(theta, r_0) for the start's responsibilities r_0
    one, _ = diagonal_mixture_em(codes, INIT, 1, reg_covar=0.0, min_weight=0.0, code_var=var)
    r0 = vade_responsibilities(codes, var, INIT)
    loc = one.loc.double().clone().requires_grad_(True)
    log_scale = one.scale.double().log().clone().requires_grad_(True)
    bound = vade_bound(codes, var, one.weights.double(), loc, log_scale.exp(), r0)
    bound.backward()
    assert float(loc.grad.abs().max()) < 1e-5 and float(log_scale.grad.abs().max()) < 1e-5
    np.testing.assert_allclose(one.weights.numpy(), r0.mean(0).numpy(), atol=1e-6)
    # and q's variances moved the responsibilities: the means-only update differs
    points, _ = diagonal_mixture_em(codes, INIT, 1, reg_covar=0.0, min_weight=0.0)
    assert float((points.loc - one.loc).abs().max()) > 1e-3


def test_the_clusterddpm_e_step_is_sklearn_on_sampled_codes_from_the_current_mixture():
    loc = mixture_codes(6).float()
    scale = heterogeneous_variances(loc, 6).sqrt().float()
    prior = GaussianMixturePrior(3, 3)
    prior.set_mixture(INIT.weights, INIT.loc, INIT.scale)
    step = make_e_step("clusterddpm", reg_covar=1e-5, min_weight=0.0)
    assert isinstance(step, ClusterDDPMEStep)
    history, extra = step(prior, loc, scale, seed=123)

    codes = ClusterDDPMEStep.sample_codes(loc, scale, 123)
    noise = (codes - loc.double()) / scale.double()  # sampled codes, not the means
    assert abs(float(noise.std()) - 1) < 0.05 and abs(float(noise.mean())) < 0.05
    gmm = GaussianMixture(3, covariance_type="diag", weights_init=INIT.weights.numpy(),
                          means_init=INIT.loc.numpy(),
                          precisions_init=(1 / INIT.scale**2).numpy(), reg_covar=1e-5)
    gmm.fit(codes.numpy())
    assert gmm.converged_ and extra["e_step_converged"]
    assert extra["e_step_iterations_run"] == gmm.n_iter_
    np.testing.assert_allclose(prior.weights.detach().numpy(), gmm.weights_, atol=1e-5)
    np.testing.assert_allclose(prior.loc.detach().numpy(), gmm.means_, atol=1e-5)
    np.testing.assert_allclose(prior.scale.detach().numpy() ** 2, gmm.covariances_, rtol=1e-5)
    assert history[-1] == pytest.approx(gmm.score(codes.numpy()), abs=1e-6)
    assert history[-1] > history[0]
    # the mixture is as wide as q's spread, wider than a fit to the means
    means_fit = GaussianMixture(3, covariance_type="diag", weights_init=INIT.weights.numpy(),
                                means_init=INIT.loc.numpy(),
                                precisions_init=(1 / INIT.scale**2).numpy()).fit(loc.numpy())
    assert gmm.covariances_.mean() > means_fit.covariances_.mean() + 0.2


def test_em_refuses_priors_without_a_mixture_to_refit_and_names_the_fix():
    for prior in ("normal", "bayes-gmm"):
        with pytest.raises(ValueError, match="method='svi' with it, or prior='gmm'"):
            VarClust(3, method="em", prior=prior)
        VarClust(3, method="svi", prior=prior)  # fine with SVI
    from varclust.model.normal_prior import StandardNormalPrior

    with pytest.raises(ValueError, match="has no mixture parameters"):
        e_step(StandardNormalPrior(3, 2), torch.zeros(5, 2), 1)


def test_old_configs_with_e_step_code_variance_still_load(tmp_path):
    from varclust import FitConfig

    assert FitConfig.from_dict({"e_step_code_variance": True}).e_step == "vade"
    assert FitConfig.from_dict({"e_step_code_variance": False}).e_step == "means"
    assert FitConfig().e_step == "clusterddpm"
    with pytest.raises(ValueError, match="e_step must be"):
        FitConfig(e_step="kmeans")
    # a checkpoint whose config holds the old key
    x, y = binary_prototypes(2, 20, 16, seed=7)
    vc = VarClust(2, method="em", latent_dim=2, hidden=(8,), pretrain_epochs=1, em_iterations=1,
                  batch_size=20, device="cpu").fit(x, progress=False)
    vc.save(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    config = payload["config"]
    del config["e_step"]
    config["e_step_code_variance"] = False
    torch.save(payload, tmp_path / "old.pt")
    old = VarClust.load(tmp_path / "old.pt", device="cpu")
    assert old.config.e_step == "means"
    np.testing.assert_array_equal(old.predict(x).labels, vc.predict(x).labels)


def test_em_keeps_the_learning_rate_constant_unless_told_and_svi_decays_it():
    x, _ = binary_prototypes(2, 20, 16, seed=8)
    common = dict(latent_dim=2, hidden=(8,), pretrain_epochs=0, batch_size=20, device="cpu",
                  learning_rate=1e-3)

    def trainer_of(**settings):
        vc = VarClust(2, **common, **settings)
        vc.build((16,))
        return make_trainer(vc.model, vc.guide, vc.config)

    assert trainer_of(method="svi").scheduler.gamma == 0.97
    assert trainer_of(method="em", em_lr_decay=0.5).scheduler.gamma == 0.5
    trainer = trainer_of(method="em")
    lrs = []
    for epoch in range(3):
        trainer.epoch(torch.from_numpy(x), 20, 0, epoch)
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
    assert lrs == [1e-3] * 3
    # SVI with lr_decay_from F: constant through epoch F, then lr * decay^(e - F) at epoch e
    trainer = trainer_of(method="svi", lr_decay=0.5, lr_decay_from=2)
    lrs = []
    for epoch in range(5):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.epoch(torch.from_numpy(x), 20, 0, epoch)
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 2.5e-4])
    assert trainer_of(method="em", lr_decay_from=2).decay_from == 0  # EM: em_lr_decay only


def test_the_m_step_gets_the_labels_of_a_semi_supervised_fit(monkeypatch):
    from varclust.inference.svi import SVITrainer

    x, y = binary_prototypes(3, 30, 16, seed=9)
    labelled = np.zeros(len(y), dtype=bool)
    labelled[::3] = True
    seen = []
    epoch = SVITrainer.epoch

    def spy(self, data, *args, **labels):
        seen.append(labels)
        return epoch(self, data, *args, **labels)

    monkeypatch.setattr(SVITrainer, "epoch", spy)
    vc = VarClust(3, method="em", latent_dim=2, hidden=(16,), pretrain_epochs=2, em_iterations=2,
                  m_step_epochs=2, batch_size=30, device="cpu")
    vc.fit(x, y, labelled=labelled, progress=False)
    assert len(seen) == 4
    for labels in seen:
        np.testing.assert_array_equal(labels["cluster_mask"].numpy(), labelled)
        np.testing.assert_array_equal(labels["cluster"].numpy()[labelled], y[labelled])


def test_em_advances_the_relaxed_guides_temperature_every_m_step_epoch():
    x, y = binary_prototypes(3, 30, 16, seed=10)
    vc = VarClust(3, method="em", guide="relaxed", latent_dim=2, hidden=(16,), pretrain_epochs=2,
                  em_iterations=3, m_step_epochs=2, batch_size=45, temperature=1.0,
                  temperature_decay=0.8, temperature_min=0.1, device="cpu")
    vc.fit(x, y, progress=False)
    # epochs 0..5; each record is taken after the iteration's last epoch (1, 3, 5)
    temps = [h["temperature"] for h in vc.history]
    np.testing.assert_allclose(temps, [0.8, 0.8**3, 0.8**5], rtol=1e-5)


def test_the_kl_warm_up_scales_the_latent_terms_and_not_the_data_term():
    """With the Monte Carlo draws fixed, -ELBO_beta = recon + beta * KL is affine in beta."""
    import pyro
    from pyro.infer import TraceEnum_ELBO

    from varclust.inference.em import KLScale, kl_warmup

    x, _ = binary_prototypes(3, 10, 16, seed=11)
    vc = VarClust(3, latent_dim=2, hidden=(16,), device="cpu")
    vc.build((16,))
    data = torch.from_numpy(x)
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss

    def at(beta):
        pyro.set_rng_seed(0)
        with KLScale(beta):
            return float(loss(vc.model, vc.guide, data).detach())

    l1, half, quarter = at(1.0), at(0.5), at(0.25)
    kl = 2 * (l1 - half)
    assert abs(kl) > 1e-3
    assert quarter == pytest.approx(l1 - 0.75 * kl, rel=1e-5)
    # beta -> 0 leaves the reconstruction term alone: -sum log p(x | z) at the same draw
    pyro.set_rng_seed(0)
    z = pyro.poutine.trace(vc.guide).get_trace(data).nodes["z"]["value"]
    with torch.no_grad():
        recon = -vc.model.likelihood(vc.model.decoder(z), 1).log_prob(data).sum()
    assert l1 - kl == pytest.approx(float(recon), rel=1e-4)
    assert [kl_warmup(3)(i) for i in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    with pytest.raises(ValueError, match="KL weight"):
        KLScale(0.0)


def test_the_cli_sets_the_em_options_and_the_decay_of_the_loop_that_runs(tmp_path, cli_config):
    config = cli_config
    em = config("--method", "em")
    assert (em.em_iterations, em.em_lr_decay, em.e_step) == (60, 1.0, "clusterddpm")  # digits
    tuned = config("--method", "em", "--lr-decay", "0.9", "--e-step", "vade", "--kl-warmup", "3")
    assert (tuned.em_lr_decay, tuned.lr_decay, tuned.e_step) == (0.9, 0.97, "vade")
    assert tuned.kl_warmup_iterations == 3
    svi = config("--lr-decay", "0.5")
    assert (svi.lr_decay, svi.em_lr_decay) == (0.5, 1.0)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"method": "em", "e_step_code_variance": True}))
    assert config("--config", str(old)).e_step == "vade"
    assert config("--dataset", "fashion-mnist", "--method", "em").em_iterations == 20


def test_em_refuses_a_prior_whose_set_mixture_does_not_store_the_mixture():
    """A prior with the mixture's keys whose set_mixture writes only the means would let EM
    run with weights it never refits; it is refused, naming what to implement."""
    from synthetic import binary_blobs

    from varclust.model import GaussianMixturePrior

    class MeansOnly(GaussianMixturePrior):
        def set_mixture(self, weights, loc, scale):
            super().set_mixture(torch.full_like(weights, 1 / len(weights)), loc, scale)

    x, _ = binary_blobs(60, num_pixels=8)
    skewed = VarClust(3, prior=MeansOnly, method="em", em_iterations=1, latent_dim=2,
                      hidden=(8,), pretrain_epochs=1, batch_size=30, device="cpu")
    with pytest.raises(ValueError, match="set_mixture did not store the mixture"):
        skewed.fit(x, progress=False)
