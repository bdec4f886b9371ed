"""Model, guide, every parameter and the data follow ``device``; the fast-path settings."""

from __future__ import annotations

import math

import pytest
import torch
from pyro import poutine

from varclust import FitConfig, VarClust
from varclust.inference import SVITrainer
from varclust.inference.loop import make_trainer
from varclust.inference.speed import configure_fast_math, fast_math, scaled_learning_rate

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no GPU"))]


@pytest.mark.parametrize("device", DEVICES)
def test_model_guide_parameters_and_data_follow_the_device(device):
    x = torch.rand(48, 1, 8, 8, generator=torch.Generator().manual_seed(0))  # on the CPU
    seen: set[str] = set()  # devices of the tensors the networks were called on

    class RecordingVarClust(VarClust):
        def build(self, data_shape):
            super().build(data_shape)
            for net in (self.guide.encoder, self.model.decoder):
                net.register_forward_pre_hook(lambda m, inputs: seen.add(inputs[0].device.type))

    vc = RecordingVarClust(3, latent_dim=2, hidden=(16,), epochs=1, pretrain_epochs=1,
                           batch_size=16, device=device)
    vc.fit(x, progress=False)  # pretraining, mixture fit, SVI: every call on the device
    assert seen == {device}

    params = {**dict(vc.model.named_parameters(prefix="model")),
              **dict(vc.guide.named_parameters(prefix="guide"))}
    assert any("prior" in name for name in params)
    for name, p in params.items():
        assert p.device.type == device, name
    trainer = SVITrainer(vc.model, vc.guide, 1e-3)
    x_dev = x.to(device)
    idx = torch.arange(len(x), device=device)
    trainer.step(x_dev, idx, len(x))
    for state in trainer.optimizer.state.values():
        assert state["exp_avg"].device.type == device
    assert bool(trainer.optimizer.defaults.get("fused")) == (device == "cuda")
    trace = poutine.trace(vc.model).get_trace(x_dev, idx, len(x))
    for name, site in trace.nodes.items():
        if site["type"] == "sample":
            assert site["value"].device.type == device, name
    pred = vc.predict(x)  # CPU input is moved to the model's device
    assert pred.responsibilities.shape == (48, 3)
    assert seen == {device}
    assert vc.sample(0, 4).device.type == "cpu"  # results come back to the host


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_an_error_not_a_silent_cpu_run():
    with pytest.raises(RuntimeError, match="no GPU"):
        VarClust(3, device="cuda")
    assert configure_fast_math(torch.device("cpu")) is False


def test_fast_math_gives_pytorchs_settings_back_after_the_block():
    """TF32 is for the fit: whatever the block set, the caller's settings come back."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with fast_math(torch.device("cpu")) as on:
            assert on is False  # a CPU: nothing to switch
            torch.set_float32_matmul_precision("high")  # as configure_fast_math does on a GPU
        assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision(before)


def test_learning_rate_scales_with_the_batch():
    assert scaled_learning_rate(2e-3, 1024, "none") == 2e-3
    assert math.isclose(scaled_learning_rate(2e-3, 1024, "sqrt"), 4e-3)
    assert math.isclose(scaled_learning_rate(2e-3, 1024, "linear"), 8e-3)
    assert math.isclose(scaled_learning_rate(2e-3, 64, "sqrt"), 1e-3)
    with pytest.raises(ValueError, match="lr_scaling"):
        FitConfig(lr_scaling="cubic")
    vc = VarClust(3, batch_size=1024, lr_scaling="sqrt", device="cpu")
    vc.build((4,))
    trainer = make_trainer(vc.model, vc.guide, vc.config)
    assert math.isclose(trainer.optimizer.param_groups[0]["lr"], 2 * vc.config.learning_rate)
