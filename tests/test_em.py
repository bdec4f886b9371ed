"""The EM loop: closed-form E-step against scikit-learn, monotone likelihood, frozen prior in the
M-step, recovery of a synthetic mixture, checkpoints and metrics of EM runs."""

import json
import logging

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from varclust import VarClust, cluster_accuracy
from varclust.inference.em import e_step, fit_em
from varclust.inference.gmm import DiagonalMixture, diagonal_mixture_em, mixture_log_likelihood
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
    vc._build((16,))
    prior = vc.model.prior
    from varclust.inference.svi import SVITrainer

    trainer = SVITrainer(vc.model, vc.guide, learning_rate=1e-2)
    prior_before = {k: v.clone() for k, v in prior.state_dict().items()}
    encoder_before = [p.clone() for p in vc.guide.parameters()]
    seen = []

    def on_m_step(i, loss):  # during the M-step the prior must not move
        seen.append(all(torch.equal(v, prior_before[k]) for k, v in prior.state_dict().items()))

    records = fit_em(vc.model, vc.guide, data, trainer, iterations=1, m_step_epochs=2,
                     e_step_iterations=3, batch_size=32, seed=0, on_m_step=on_m_step)
    assert len(seen) == 2 * 4 and all(seen)
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, vc.guide.parameters()))
    # the E-step then did change the prior, and the prior is trainable again afterwards
    assert not torch.equal(prior.loc, prior_before["loc_unconstrained"])
    assert all(p.requires_grad for p in prior.parameters())
    assert records[0]["loglik"] >= records[0]["loglik_before"]


def test_the_e_step_can_count_the_encoders_variances():
    """With code variances v the variance update is E_r[z^2] + E_r[v] - mu^2: for a constant v,
    scikit-learn's variances plus v (means and weights unchanged after one step)."""
    codes = mixture_codes(5)
    v = torch.full_like(codes, 0.25)
    with_var, _ = diagonal_mixture_em(codes, INIT, 1, reg_covar=1e-3, min_weight=0.0, code_var=v)
    gmm = sklearn_after(codes, 1, 1e-3)
    np.testing.assert_allclose(with_var.scale.numpy() ** 2, gmm.covariances_ + 0.25, atol=1e-4)
    np.testing.assert_allclose(with_var.loc.numpy(), gmm.means_, atol=1e-4)
    np.testing.assert_allclose(with_var.weights.numpy(), gmm.weights_, atol=1e-4)
