"""Autoencoder pretraining as a resumable state: Adam over a loss module, epoch by epoch, with
the position inside the epoch, so that a fit checkpoints its pretraining (every epoch, and every
N mini-batches) and a resumed fit ends with the parameters of one that never stopped.

It runs the same steps as :func:`varclust.inference.init.minimise_over_epochs` (the same
batches, Adam, loss sums), and adds :meth:`Pretrainer.state_dict` / :meth:`load_state_dict`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .batching import epoch_batches
from .init import Batches

__all__ = ["Pretrainer"]


class Pretrainer:
    """Minimise ``loss_module(x)`` (a mean per datum over x (B, ...)) by Adam over shuffled
    mini-batches of ``batch_size``; the batch order depends only on (seed, epoch).

    Args:
        batches: ``(num_data, batch_size, seed, epoch, device) -> index batches`` of an epoch
            (data-parallel training passes this process's shard).
        wrap: wraps the loss module (data-parallel training passes DDP).
    """

    def __init__(
        self, loss_module: nn.Module, learning_rate: float, batch_size: int, seed: int, *,
        batches: Batches = epoch_batches, wrap: Callable[[nn.Module], nn.Module] | None = None,
    ) -> None:
        loss_module.train()
        self.loss_module = wrap(loss_module) if wrap is not None else loss_module
        params = list(self.loss_module.parameters())
        fused = bool(params) and all(p.is_cuda for p in params)
        self.optimizer = torch.optim.Adam(params, lr=learning_rate, fused=fused or None)
        self.batch_size, self.seed, self.batches = batch_size, seed, batches
        #: epochs done; batches done of the current epoch; its loss sum and data seen so far
        self.epoch, self.step = 0, 0
        self.loss_sum: Tensor | float = 0.0
        self.seen = 0
        #: the mean loss per datum of every epoch done
        self.losses: list[float] = []

    def run(
        self, data: Tensor, epochs: int,
        on_epoch: Callable[[int, float], None] | None = None,
        save: Callable[[dict], None] | None = None, save_every: int = 0,
    ) -> list[float]:
        """Train on data (N, ...) until ``epochs`` epochs are done, continuing where the state
        stands. ``on_epoch(epoch, loss)`` runs after each epoch; ``save(state_dict())`` after
        each epoch and, with ``save_every`` > 0, every ``save_every`` batches inside one: the
        checkpoints of pretraining. Returns :attr:`losses`."""
        while self.epoch < epochs:
            batches = list(self.batches(len(data), self.batch_size, self.seed + 7919,
                                        self.epoch, data.device))
            for i in range(self.step, len(batches)):
                self.train_step(data[batches[i]])
                self.step = i + 1
                if save is not None and save_every and self.step % save_every == 0 and (
                        self.step < len(batches)):  # mid-epoch
                    save(self.state_dict())
            self.losses.append(float(self.loss_sum) / self.seen)
            self.epoch, self.step, self.loss_sum, self.seen = self.epoch + 1, 0, 0.0, 0
            if on_epoch is not None:
                on_epoch(self.epoch - 1, self.losses[-1])
            if save is not None:
                save(self.state_dict())
        return self.losses

    def train_step(self, x: Tensor) -> None:
        """One Adam step on the batch x (B, ...); its loss is added to the epoch's sum."""
        loss = self.loss_module(x)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum = self.loss_sum + loss.detach() * len(x)
        self.seen += len(x)

    def state_dict(self) -> dict:
        """Adam's state and the position (tensors and plain values: weights-only loadable)."""
        return {"optimizer": self.optimizer.state_dict(), "epoch": self.epoch,
                "step": self.step, "loss_sum": torch.as_tensor(self.loss_sum).cpu(),
                "seen": self.seen, "losses": list(self.losses)}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step, self.seen = int(state["epoch"]), int(state["step"]), state["seen"]
        device = next(iter(self.loss_module.parameters())).device
        self.loss_sum = state["loss_sum"].to(device)
        self.losses = list(state["losses"])
