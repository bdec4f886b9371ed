"""Denoising pretraining (``pretrain_masking``): the encoder's input is masked, the target is
the clean image; off (0) it changes nothing; a fit stopped inside it resumes exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from varclust import FitConfig, VarClust
from varclust.inference import pretrain
from varclust.inference.checkpoint import load_checkpoint
from varclust.inference.denoising import MaskedInput
from varclust.model.likelihoods import BernoulliLikelihood
from varclust.model.pretraining_losses import AutoencoderLoss

sys.path.insert(0, str(Path(__file__).parent))
import resume_child  # noqa: E402
from test_resume import assert_same_state, deterministic  # noqa: E402, F401


class Recorder(nn.Module):
    """An 'encoder' that keeps its input and returns (loc, scale) of the first 3 values."""

    def forward(self, x):
        self.seen = x
        return x[:, :3], torch.ones_like(x[:, :3])


def test_masked_input_zeroes_a_fraction_p_and_leaves_the_rest():
    x = torch.rand(400, 50) + 0.5  # no zeros of its own
    recorder = Recorder()
    MaskedInput(recorder, 0.3)(x)
    zeroed = recorder.seen == 0
    assert abs(zeroed.float().mean().item() - 0.3) < 0.02
    assert torch.equal(recorder.seen[~zeroed], x[~zeroed])


def test_masking_off_is_the_encoder_itself_and_draws_nothing():
    x = torch.rand(8, 5)
    recorder = Recorder()
    state = torch.get_rng_state()
    MaskedInput(recorder, 0.0)(x)
    assert torch.equal(recorder.seen, x) and torch.equal(torch.get_rng_state(), state)


def test_the_loss_scores_the_clean_image_from_the_masked_code():
    """-log p(x | z = loc(mask * x)): by hand with the mask the module draws."""
    torch.manual_seed(0)
    x = torch.rand(6, 4).round()
    decoder = nn.Linear(3, 4)
    loss = AutoencoderLoss(MaskedInput(Recorder(), 0.5), decoder, BernoulliLikelihood())
    torch.manual_seed(1)
    value = loss(x)
    torch.manual_seed(1)
    masked = x * (torch.rand_like(x) >= 0.5)
    logits = decoder(masked[:, :3])
    by_hand = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
    assert torch.allclose(value, by_hand.sum(-1).mean(), atol=1e-6)
    assert not torch.equal(masked, x)  # the draw masked something


def test_the_setting_is_checked_and_has_a_flag():
    with pytest.raises(ValueError, match=r"pretrain_masking must be in \[0, 1\)"):
        FitConfig(pretrain_masking=1.0)
    assert FitConfig(pretrain_masking=0.2).pretrain_masking == 0.2
    from varclust.cli import build_parser

    args = build_parser().parse_args(["fit", "--out", "run", "--pretrain-masking", "0.2"])
    assert args.pretrain_masking == 0.2


def test_masking_changes_pretraining_and_off_reproduces_the_plain_fit():
    data = resume_child.data()
    settings = {**resume_child.SETTINGS, "epochs": 1, "checkpoint_every_steps": 0}
    plain = VarClust(**settings).fit(data, progress=False)
    off = VarClust(**settings, pretrain_masking=0.0).fit(data, progress=False)
    masked = VarClust(**settings, pretrain_masking=0.25).fit(data, progress=False)
    assert off.pretrain_losses == plain.pretrain_losses
    assert masked.pretrain_losses != plain.pretrain_losses
    assert masked.config.to_dict()["pretrain_masking"] == 0.25


def test_a_generator_with_its_own_pretraining_refuses_masking():
    settings = {**resume_child.SETTINGS, "epochs": 1, "generator": "ddpm", "method": "em",
                "em_iterations": 1, "diffusion_steps": 10, "diffusion_width": 8, "sample_steps": 0,
                "pretrain_masking": 0.2}
    images = torch.rand(32, 1, 8, 8).round()
    with pytest.raises(ValueError, match="pretrains its own way; set pretrain_masking=0"):
        VarClust(**settings).fit(images, progress=False)


@pytest.mark.usefixtures("deterministic")
def test_a_fit_stopped_inside_masked_pretraining_resumes_bit_for_bit(tmp_path, monkeypatch):
    data = resume_child.data()
    settings = {**resume_child.SETTINGS, "pretrain_epochs": 3, "epochs": 1,
                "pretrain_masking": 0.3}
    whole = tmp_path / "whole"
    VarClust(**settings).fit(data, out_dir=whole, progress=False)

    original, done = pretrain.Pretrainer.train_step, [0]

    def train_step(self, x):
        original(self, x)
        done[0] += 1
        if done[0] == 13:  # epoch 2, batch 5: the last checkpoint is epoch 2, batch 3
            raise KeyboardInterrupt

    monkeypatch.setattr(pretrain.Pretrainer, "train_step", train_step)
    stopped = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        VarClust(**settings).fit(data, out_dir=stopped, progress=False)
    monkeypatch.setattr(pretrain.Pretrainer, "train_step", original)
    torch.manual_seed(12345)  # the resumed fit must not depend on this process's generator
    VarClust(**settings).fit(data, out_dir=stopped, resume=True, progress=False)
    resumed, expected = (load_checkpoint(stopped / "checkpoint.pt"),
                         load_checkpoint(whole / "checkpoint.pt"))
    assert resumed["pretrain_losses"] == expected["pretrain_losses"]
    assert_same_state(resumed, expected)
