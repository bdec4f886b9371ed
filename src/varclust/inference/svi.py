"""Stochastic variational inference with the cluster enumerated in parallel.

The ELBO is Pyro's ``TraceEnum_ELBO`` turned into a ``torch.nn.Module`` (``elbo(model, guide)``),
optimised with plain ``torch.optim``: parameters, optimiser state and checkpoints are ordinary
PyTorch, as in Pyro's ``examples/svi_torch.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.infer import TraceEnum_ELBO
from pyro.nn import PyroModule
from torch import Tensor

from .batching import epoch_batches

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
        self.elbo = TraceEnum_ELBO(max_plate_nesting=1)(model, guide)
        self.clip_norm = clip_norm
        self.optimizer = torch.optim.Adam(self.elbo.parameters(), lr=learning_rate)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=lr_decay)

    def step(self, x: Tensor, indices: Tensor, num_data: int, **labels: Tensor) -> Tensor:
        """One gradient step on a mini-batch; returns the detached loss (-ELBO scaled to N).

        ``labels``: in semi-supervised fits, ``cluster`` (B,) and ``cluster_mask`` (B,) for
        the batch, passed on to model and guide.
        """
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.elbo(x, indices, num_data, **labels)
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
        cluster: Tensor | None = None,
        cluster_mask: Tensor | None = None,
    ) -> float:
        """One pass over ``data`` (N, ...) in shuffled mini-batches, then a scheduler step.

        ``cluster`` (N,) and ``cluster_mask`` (N,) bool: semi-supervised labels, observed where
        the mask is true. Returns the mean ELBO per datum over the epoch's batches.
        """
        num_data = len(data)
        total = torch.zeros((), device=data.device)
        batches = 0
        for i, idx in enumerate(epoch_batches(num_data, batch_size, seed, epoch, data.device)):
            labels = {} if cluster_mask is None else {
                "cluster": cluster[idx], "cluster_mask": cluster_mask[idx]}
            loss = self.step(data[idx], idx, num_data, **labels)
            total += loss
            batches += 1
            if on_step is not None:
                on_step(i, loss)
        self.scheduler.step()
        return -float(total) / (batches * num_data)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
