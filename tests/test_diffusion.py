"""The conditional DDPM generator: closed forms of the forward process and loss, its place in
the Pyro model, training by an M-step, the two samplers, and the ddpm EM run end to end."""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO

from varclust import VarClust
from varclust.cli import main
from varclust.guides.encoders import MLPEncoder
from varclust.guides.marginal import MarginalGuide
from varclust.inference.em import VaDEEStep, fit_em
from varclust.inference.svi import SVITrainer
from varclust.inference.warm_start import LATENT_RELIANCE_WARNING
from varclust.model.diffusion import ConditionalDDPM, DiffusionClusteringModel, noise_schedule
from varclust.model.priors import GaussianMixturePrior

SHAPE = (1, 8, 8)


def tiny_ddpm(steps: int = 10, schedule: str = "linear", dropout: float = 0.1):
    torch.manual_seed(0)
    return ConditionalDDPM(SHAPE, latent_dim=2, num_steps=steps, schedule=schedule, width=8,
                           latent_dropout=dropout)


def tiny_images(n: int, seed: int = 0) -> torch.Tensor:
    """Two kinds of 8x8 images: a bright left half or a bright top half, plus noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, *SHAPE)
    x[: n // 2, :, :, :4] = 1.0
    x[n // 2:, :, :4, :] = 1.0
    return (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)


def test_schedules_match_their_closed_forms():
    betas = noise_schedule("linear", 1000)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    short = noise_schedule("linear", 100)  # scaled so that T=100 adds as much noise
    assert short[0].item() == pytest.approx(1e-3) and short[-1].item() == pytest.approx(0.2)
    cos = noise_schedule("cosine", 50)
    abar = torch.cumprod(1 - cos, 0)
    s, t = 0.008, torch.arange(1, 51, dtype=torch.float64) / 50
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    torch.testing.assert_close(abar[:-1], f[:-1])  # the last beta is capped at 0.999
    with pytest.raises(ValueError, match="'linear' 'clusterddpm' 'cosine'"):
        noise_schedule("quadratic", 10)


@pytest.mark.parametrize("steps", [400, 200, 1000])
def test_the_clusterddpm_schedule_runs_from_1e_4_to_0_02_at_any_length(steps):
    betas = noise_schedule("clusterddpm", steps)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    torch.testing.assert_close(betas, torch.linspace(1e-4, 0.02, steps, dtype=torch.float64))
    ddpm = ConditionalDDPM(SHAPE, 2, num_steps=steps, schedule="clusterddpm", width=8)
    torch.testing.assert_close(ddpm.alpha_bar, torch.cumprod(1 - betas, 0).float())
    if steps == 400:  # ClusterDDPM's T: about 13% of the image is left at the last step
        assert float(ddpm.alpha_bar[-1].sqrt()) == pytest.approx(0.134, abs=0.01)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_forward_noising_and_noise_loss_match_closed_forms(schedule):
    ddpm = tiny_ddpm(steps=20, schedule=schedule).eval()
    x = tiny_images(6)
    z = torch.randn(6, 2)
    abar = torch.cumprod(1 - noise_schedule(schedule, 20), 0)
    t = torch.tensor([0, 3, 7, 12, 19, 5])
    noise = torch.randn(6, *SHAPE)
    x0 = 2 * x - 1
    expected_xt = (abar[t].sqrt().view(-1, 1, 1, 1) * x0
                   + (1 - abar[t]).sqrt().view(-1, 1, 1, 1) * noise).float()
    torch.testing.assert_close(ddpm.q_sample(x0, t, noise), expected_xt)

    # the loss for given t and noise
    with torch.no_grad():
        eps = ddpm.unet(expected_xt, t, z)
        expected = ((noise - eps) ** 2).sum((1, 2, 3))
        torch.testing.assert_close(ddpm.noise_loss(x, z, t, noise), expected)
        # and with t, noise drawn inside, reproduced from the same seed
        torch.manual_seed(11)
        drawn = ddpm.noise_loss(x, z)
        torch.manual_seed(11)
        t2 = torch.randint(0, 20, (6,))
        n2 = torch.randn_like(x0)
        x_t2 = (abar[t2].sqrt().view(-1, 1, 1, 1) * x0
                + (1 - abar[t2]).sqrt().view(-1, 1, 1, 1) * n2).float()
        torch.testing.assert_close(drawn, ((n2 - ddpm.unet(x_t2, t2, z)) ** 2).sum((1, 2, 3)))
    # the code matters: another z gives another loss
    assert not torch.allclose(ddpm.noise_loss(x, z + 1, t, noise), expected)


def test_the_pyro_model_scores_x_by_the_weighted_noise_loss():
    """-ELBO = sum_n [w L(x_n, z_n) - log sum_k pi_k N(z_n | mu_k, s_k) + log q(z_n | x_n)]."""
    ddpm = tiny_ddpm().eval()
    prior = GaussianMixturePrior(3, 2)
    prior.set_mixture(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([[-1.0, 0.5], [0.7, -0.3],
                      [0.2, 1.2]]), torch.tensor([[0.8, 1.3], [0.5, 0.9], [1.5, 0.6]]))
    model = DiffusionClusteringModel(prior, ddpm, weight=2.5)
    guide = MarginalGuide(MLPEncoder(SHAPE, 2, (16,)))
    x = tiny_images(4)
    t = torch.tensor([1, 4, 8, 9])
    noise = torch.randn(4, *SHAPE)
    loss_at = ddpm.noise_loss
    ddpm.noise_loss = lambda x_, z_: loss_at(x_, z_, t, noise)  # fix the Monte Carlo draw

    pyro.set_rng_seed(5)
    loss = TraceEnum_ELBO(max_plate_nesting=1)(model, guide)(x)
    pyro.set_rng_seed(5)
    z = pyro.poutine.trace(guide).get_trace(x).nodes["z"]["value"].detach()
    with torch.no_grad():
        loc, scale = guide.encode(x)
        log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
        log_pz = prior.log_joint(z).logsumexp(-1)
        expected = (2.5 * loss_at(x, z, t, noise) - log_pz + log_q).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_one_m_step_lowers_the_diffusion_loss():
    torch.manual_seed(0)
    x = tiny_images(32)
    ddpm = tiny_ddpm(steps=10)
    prior = GaussianMixturePrior(2, 2)
    prior.set_mixture(torch.tensor([0.5, 0.5]), torch.tensor([[-1.0, 0.0], [1.0, 0.0]]),
                      torch.ones(2, 2))
    model = DiffusionClusteringModel(prior, ddpm, weight=1.0)
    guide = MarginalGuide(MLPEncoder(SHAPE, 2, (16,)))
    t = torch.arange(32) % 10
    noise = torch.randn(32, *SHAPE, generator=torch.Generator().manual_seed(1))

    def held_out_loss() -> float:  # fixed t and noise, z = encoder mean, no latent dropout
        ddpm.eval()
        with torch.no_grad():
            return float(ddpm.noise_loss(x, guide.encode(x)[0], t, noise).mean())

    before = held_out_loss()
    prior_loc = prior.loc.detach().clone()
    trainer = SVITrainer(model, guide, learning_rate=3e-3)
    seen_prior = []
    fit_em(model, guide, x, trainer, iterations=1, m_step_epochs=8, e_step=VaDEEStep(2),
           batch_size=16, seed=0,
           on_m_step=lambda i, _: seen_prior.append(torch.equal(prior.loc, prior_loc)))
    after = held_out_loss()
    assert all(seen_prior) and len(seen_prior) == 16  # the prior held still during the M-step
    assert after < 0.8 * before, (before, after)


def test_samplers_return_images_of_the_right_shape_and_range():
    ddpm = tiny_ddpm(steps=12)
    z = torch.randn(5, 2)
    ancestral = ddpm.sample(z)
    strided = ddpm.sample(z, steps=4)
    guided = ddpm.sample(z, steps=3, guidance=2.0)
    for images in (ancestral, strided, guided):
        assert images.shape == (5, *SHAPE)
        assert torch.isfinite(images).all()
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
        assert images.std() > 0  # not a constant image
    # the strided sampler is deterministic given the starting noise; ancestral adds noise
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    torch.testing.assert_close(ddpm.sample(z, 4, generator=g()), ddpm.sample(z, 4, generator=g()))
    assert ddpm.training  # sampling leaves the train/eval mode as it was
    with pytest.raises(ValueError, match="steps must be in"):
        ddpm.sample(z, steps=13)
    with pytest.raises(ValueError, match="divisible by 4"):
        ConditionalDDPM((1, 6, 6), 2)


def test_a_ddpm_em_run_from_the_cli_samples_a_cluster(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["fit", "--dataset", "digits", "--clusters", "3", "--method", "em",
                 "--generator", "ddpm", "--network", "conv", "--latent-dim", "3",
                 "--em-iterations", "1", "--pretrain-epochs", "1", "--diffusion-steps", "8",
                 "--diffusion-width", "8", "--diffusion-weight", "20", "--sample-steps", "2",
                 "--batch-size", "256", "--ddpm-pretrain", "diffusion",
                 "--out", str(run), "--device", "cpu", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert (run / "samples.png").stat().st_size > 0
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    assert payload["config"]["generator"] == "ddpm" and payload["epoch"] == 1
    assert payload["config"]["diffusion_weight"] == 20.0
    assert main(["sample", str(run), "--cluster", "2", "--num", "3", "--steps", "0"]) == 0
    assert (run / "samples_cluster2.png").stat().st_size > 0

    vc = VarClust.load(run, device="cpu")
    images = vc.sample(2, 4)
    assert images.shape == (4, 1, 8, 8)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    with pytest.raises(ValueError, match="ddpm generator needs pixels in"):
        vc.predict(np.full((2, 1, 8, 8), 2.0, dtype=np.float32))


def test_inference_data_of_a_ddpm_fit_is_refused_with_a_reason():
    from varclust.analysis.inference_data import to_inference_data

    vc = VarClust(2, generator="ddpm", network="conv", latent_dim=2, diffusion_steps=4,
                  diffusion_width=8, sample_steps=0, device="cpu")
    vc.build(SHAPE)
    with pytest.raises(ValueError, match="not a density"):
        to_inference_data(vc, tiny_images(4))


def test_latent_reliance_tells_a_generator_that_uses_z_from_one_that_ignores_it():
    g = torch.Generator().manual_seed(0)
    x = tiny_images(64)[torch.randperm(64, generator=g)]
    kind = (x[:, 0, 6, :4].mean(-1) < 0.5).float()  # 1 for the bright-top kind (dark bottom-left)
    z = torch.stack([2 * kind - 1, torch.zeros(64)], -1)  # the kind as a code
    ddpm = tiny_ddpm(steps=10, dropout=0.0)
    ignoring = tiny_ddpm(steps=10)
    torch.nn.init.zeros_(ignoring.unet.latent_mlp[-1].weight)
    torch.nn.init.zeros_(ignoring.unet.latent_mlp[-1].bias)
    assert ignoring.latent_reliance(x, z) == pytest.approx(0.0, abs=1e-6)

    optimizer = torch.optim.Adam(ddpm.parameters(), lr=3e-3)
    for _ in range(300):
        loss = ddpm.noise_loss(x, z).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert ddpm.training
    reliance = ddpm.latent_reliance(x, z)
    assert ddpm.training  # the mode is restored
    assert reliance > 0.05, reliance  # swapping the kind's code raises the loss


def test_a_ddpm_fit_warns_when_the_pretrained_generator_ignores_the_codes(caplog):
    vc = VarClust(2, generator="ddpm", network="conv", method="em", latent_dim=2,
                  em_iterations=0, epochs=0, pretrain_epochs=1, diffusion_steps=8,
                  diffusion_width=8, sample_steps=0, batch_size=16, device="cpu",
                  ddpm_pretrain="diffusion")
    with caplog.at_level("WARNING", logger="varclust"):
        vc.fit(tiny_images(32), progress=False)
    assert isinstance(vc.latent_reliance, float)
    warned = "hardly uses the codes" in caplog.text
    assert warned == (vc.latent_reliance < LATENT_RELIANCE_WARNING), (vc.latent_reliance,
                                                                   caplog.text)
    assert warned  # one epoch of 2 steps teaches a diffusion autoencoder nothing about z


def test_autoencoder_pretraining_freezes_the_codes_and_stops_when_the_generator_uses_them():
    x = tiny_images(64)
    common = dict(generator="ddpm", network="mlp", hidden=(32,), latent_dim=2, method="em",
                  em_iterations=0, pretrain_epochs=4, diffusion_steps=10, diffusion_width=8,
                  sample_steps=0, batch_size=16, pretrain_lr=3e-3, device="cpu")
    target = 0.05
    vc = VarClust(2, diffusion_pretrain_epochs=200, pretrain_reliance=target, **common)
    vc.fit(x, progress=False)
    diffusion_epochs = len(vc.pretrain_losses) - 4
    assert 0 < diffusion_epochs < 200 and diffusion_epochs % 5 == 0  # stopped at a check
    assert vc.latent_reliance >= target  # measured as the stop rule measured it

    # the encoder is the autoencoder's: the generator stage did not move it
    ae_only = VarClust(2, diffusion_pretrain_epochs=0, **common).fit(x, progress=False)
    for a, b in zip(vc.guide.encoder.parameters(), ae_only.guide.encoder.parameters()):
        torch.testing.assert_close(a, b)
    # no target: every epoch runs
    full = VarClust(2, diffusion_pretrain_epochs=7, pretrain_reliance=0.0, **common)
    assert len(full.fit(x, progress=False).pretrain_losses) == 4 + 7
    with pytest.raises(ValueError, match="ddpm_pretrain='diffusion'"):
        VarClust(2, **{**common, "network": "conv"}).fit(x, progress=False)


def test_a_semi_supervised_ddpm_em_fit_observes_the_labels_in_the_m_step():
    x = tiny_images(32)
    y = np.repeat([0, 1], 16)  # tiny_images: the first half is one kind, the second the other
    labelled = np.zeros(32, dtype=bool)
    labelled[::4] = True
    vc = VarClust(2, generator="ddpm", network="mlp", hidden=(16,), latent_dim=2, method="em",
                  em_iterations=1, pretrain_epochs=1, diffusion_pretrain_epochs=1,
                  diffusion_steps=8, diffusion_width=8, sample_steps=0, batch_size=16,
                  device="cpu")
    vc.fit(x, y, labelled=labelled, progress=False)
    assert np.isfinite(vc.history[-1]["elbo"])
    # the observed sites are in the model's trace: the labels reached the M-step's model
    trace = pyro.poutine.trace(vc.model).get_trace(
        x[:4], torch.arange(4), 32, torch.tensor([0, 0, 1, 1]), torch.tensor([1, 0, 1, 0]).bool())
    assert trace.nodes["cluster_observed"]["is_observed"]


def test_guidance_without_latent_dropout_is_refused():
    """With latent_dropout 0 the "no latent" prediction that guidance mixes in is never
    trained: the setting is refused with what to change."""
    from varclust import FitConfig

    with pytest.raises(ValueError, match="guidance needs latent_dropout > 0"):
        FitConfig(generator="ddpm", method="em", guidance=2.0, latent_dropout=0.0)
    FitConfig(generator="ddpm", method="em", guidance=2.0, latent_dropout=0.1)
