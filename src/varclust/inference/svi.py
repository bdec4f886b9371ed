"""Stochastic variational inference with the cluster enumerated in parallel.

The ELBO is Pyro's ``TraceEnum_ELBO`` turned into a ``torch.nn.Module`` (``elbo(model, guide)``),
optimised with plain ``torch.optim``: parameters, optimiser state and checkpoints are ordinary
PyTorch, as in Pyro's ``examples/svi_torch.py``. The trainer uses
:class:`~varclust.inference.elbo.SyncFreeTraceEnum_ELBO`: the same estimator without Pyro's
per-step NaN checks (host syncs on a GPU); a non-finite epoch ELBO is warned about instead.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator

import pyro
import torch
from pyro.nn import PyroModule
from torch import Tensor

from .batching import epoch_batches
from .elbo import SyncFreeTraceEnum_ELBO

__all__ = ["SVITrainer"]


class SVITrainer:
    """One ELBO, one Adam optimiser, an exponential learning-rate schedule, gradient clipping.

    Args:
        model, guide: PyroModules with the signature ``(x, indices, num_data)``.
        learning_rate: Adam's step size.
        lr_decay: the learning rate is multiplied by this after every epoch.
        clip_norm: gradients are clipped to this global norm.
    """

    def __init__(
        self,
        model: PyroModule,
        guide: PyroModule,
        learning_rate: float,
        lr_decay: float = 1.0,
        clip_norm: float = 10.0,
    ) -> None:
        self.model = model
        self.guide = guide
        self.elbo = self.wrap_elbo(SyncFreeTraceEnum_ELBO(max_plate_nesting=1)(model, guide))
        self.clip_norm = clip_norm
        params = list(self.elbo.parameters())
        # the fused CUDA kernel updates every parameter in one launch
        fused = bool(params) and all(p.is_cuda for p in params)
        self.optimizer = torch.optim.Adam(params, lr=learning_rate, fused=fused or None)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=lr_decay)

    def step(self, x: Tensor, indices: Tensor, num_data: int) -> Tensor:
        """One gradient step on a mini-batch; returns the detached loss (-ELBO scaled to N)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.elbo(x, indices, num_data)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.elbo.parameters(), self.clip_norm)
        self.optimizer.step()
        return loss.detach()

    def epoch(
        self,
        data: Tensor,
        batch_size: int,
        seed: int,
        epoch: int,
        on_step: Callable[[int, Tensor], None] | None = None,
    ) -> float:
        """One pass over ``data`` (N, ...) in shuffled mini-batches, then a scheduler step.

        Returns the mean ELBO per datum over the epoch's batches.
        """
        num_data = len(data)
        total = torch.zeros((), device=data.device)
        batches = 0
        # the data were validated before training: Pyro's per-step argument checks are skipped
        with pyro.validation_enabled(False):
            for i, idx in enumerate(self.batches(num_data, batch_size, seed, epoch, data.device)):
                loss = self.step(data[idx], idx, num_data)
                total += loss
                batches += 1
                if on_step is not None:
                    on_step(i, loss)
        self.scheduler.step()
        total, batches = self.reduce_epoch_total(total, batches)
        elbo = -float(total) / (batches * num_data)  # the epoch's one host sync
        if not math.isfinite(elbo):
            warnings.warn(f"the ELBO of epoch {epoch + 1} is {elbo}: training diverged; "
                          "lower the learning rate or clip_norm", RuntimeWarning, stacklevel=2)
        return elbo

    # hooks that data-parallel training (inference/distributed.py) overrides
    def wrap_elbo(self, elbo: torch.nn.Module) -> torch.nn.Module:
        """The module whose call gives the loss (here the ELBO module itself)."""
        return elbo

    def batches(
        self, num_data: int, batch_size: int, seed: int, epoch: int, device: torch.device
    ) -> Iterator[Tensor]:
        """The index batches of one epoch."""
        return epoch_batches(num_data, batch_size, seed, epoch, device)

    def reduce_epoch_total(self, total: Tensor, batches: int) -> tuple[Tensor, int]:
        """The epoch's summed loss and batch count (over all processes when distributed)."""
        return total, batches

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
