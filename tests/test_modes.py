"""Reading a fit leaves its modules' train/eval modes as they were (``varclust.modes``)."""

from __future__ import annotations

import pytest
from synthetic import binary_blobs
from torch import nn

from varclust import VarClust
from varclust.modes import evaluating


def mixed() -> nn.Sequential:
    """A module in train mode whose second child is in eval mode."""
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.Linear(2, 2))
    net.train()
    net[1].eval()
    return net


def test_evaluating_puts_every_submodule_in_eval_and_restores_mixed_modes():
    a, b = mixed(), mixed()
    b.eval()
    with evaluating(a, b):
        assert not any(m.training for m in [*a.modules(), *b.modules()])
    assert [m.training for m in a.modules()] == [True, True, False, True]
    assert not any(m.training for m in b.modules())


def test_evaluating_restores_the_modes_when_the_block_raises():
    a = mixed()
    with pytest.raises(RuntimeError, match="inside"), evaluating(a):
        raise RuntimeError("inside")
    assert [m.training for m in a.modules()] == [True, True, False, True]


def test_reading_a_fit_keeps_its_training_mode():
    """predict, encode and score between two training steps: the guide and the model stay in
    train mode, as a notebook left them."""
    x = binary_blobs(60, num_pixels=16, flip=0.0)[0]
    vc = VarClust(3, latent_dim=2, hidden=(8,), epochs=1, pretrain_epochs=2, batch_size=30,
                  device="cpu").fit(x, progress=False)
    vc.model.train()
    vc.guide.train()
    vc.predict(x)
    vc.encode(x)
    vc.score(x)
    assert vc.model.training and vc.guide.training
    vc.model.eval()
    vc.guide.eval()
    vc.predict(x)
    vc.score(x)
    assert not vc.model.training and not vc.guide.training
