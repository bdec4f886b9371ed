"""The training step's fast path computes Pyro's exact ELBO and never waits for the device."""

from __future__ import annotations

import pyro
import torch
from pyro.infer import TraceEnum_ELBO

from varclust import VarClust
from varclust.inference import SVITrainer
from varclust.inference.elbo import SyncFreeTraceEnum_ELBO


def small_problem():
    pyro.set_rng_seed(0)
    vc = VarClust(3, latent_dim=2, hidden=(16,), pretrain_epochs=0, device="cpu")
    vc.build((6,))
    x = torch.rand(10, 6, generator=torch.Generator().manual_seed(1))
    return vc, x, torch.arange(10) * 3


def test_sync_free_elbo_equals_pyros_trace_enum_elbo_in_value_and_gradient():
    vc, x, idx = small_problem()
    results = []
    for elbo_class in (TraceEnum_ELBO, SyncFreeTraceEnum_ELBO):
        elbo = elbo_class(max_plate_nesting=1)(vc.model, vc.guide)
        elbo.zero_grad()
        pyro.set_rng_seed(11)
        loss = elbo(x, idx, 30)
        loss.backward()
        grads = {k: p.grad.clone() for k, p in elbo.named_parameters()}
        results.append((loss.detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=0)
    assert grads_a.keys() == grads_b.keys() and any("prior" in k for k in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=0, atol=0)


HOST_READS = ("__bool__", "item", "__float__", "__int__", "tolist")


def count_host_reads(elbo, x, idx, monkeypatch) -> int:
    """How many times the loss and its gradient read a tensor's value on the host (on a GPU each
    read waits for the work queued so far)."""
    reads = []
    with pyro.validation_enabled(False):
        elbo(x, idx, 30).backward()  # warm-up: lazy initialisation may look at values once
        for method in HOST_READS:
            original = getattr(torch.Tensor, method)

            def counting(self, *args, _original=original, _name=method):
                reads.append(_name)
                return _original(self, *args)

            monkeypatch.setattr(torch.Tensor, method, counting)
        loss = elbo(x, idx, 30)
        loss.backward()
        monkeypatch.undo()
    assert torch.isfinite(loss)
    return len(reads)


def test_the_trainers_elbo_reads_the_device_twice_less_than_pyros(monkeypatch):
    vc, x, idx = small_problem()
    ours = count_host_reads(SVITrainer(vc.model, vc.guide, 1e-3).elbo, x, idx, monkeypatch)
    pyros = count_host_reads(TraceEnum_ELBO(max_plate_nesting=1)(vc.model, vc.guide), x, idx,
                             monkeypatch)
    # Pyro's TraceEnum_ELBO adds a NaN check of the loss and one of its gradient; the reads
    # left (one per cost term) are `mask.all()` inside Pyro's Dice estimator
    assert pyros == ours + 2
