"""What the fit loop reports to, step by step and epoch by epoch (as Lightning's callbacks):
progress bars or lines, and checkpoints.

A callback has ``on_step(epoch, step, loss)`` after every gradient step (``step`` counts
within the epoch), ``on_epoch(done, record)`` after every epoch (or EM iteration; ``done``
epochs are then finished and ``record`` is already in the history) and ``close()`` at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from .progress import Progress

__all__ = ["Callback", "Checkpointing", "EMProgress", "SVIProgress"]


class Callback:
    """Base class: every hook does nothing."""

    def on_step(self, epoch: int, step: int, loss: Tensor) -> None:
        """After gradient step ``step`` (0-based within the epoch) of epoch ``epoch``."""

    def on_epoch(self, done: int, record: dict[str, Any]) -> None:
        """After an epoch (an EM iteration): ``done`` are finished, ``record`` its numbers."""

    def close(self) -> None:
        """When the loop ends."""


class SVIProgress(Callback):
    """One bar over every SVI step (the ELBO per datum every 20 steps, the epoch's numbers
    after each), or one plain line per epoch."""

    def __init__(self, show: Progress, epochs: int, steps_per_epoch: int, start_epoch: int,
                 num_data: int) -> None:
        self.show, self.epochs, self.num_data = show, epochs, num_data
        self.bar = show.bar(total=epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
                            desc="svi", unit="step")

    def on_step(self, epoch: int, step: int, loss: Tensor) -> None:
        self.bar.update(1)
        if step % 20 == 0 and self.show.bars:
            self.bar.set_postfix(elbo=f"{-float(loss) / self.num_data:.2f}")

    def on_epoch(self, done: int, record: dict[str, Any]) -> None:
        if self.show.bars:
            self.bar.set_postfix({k: round(v, 3) for k, v in record.items() if k != "epoch"})
        self.show.line("svi epoch", done, self.epochs, record)

    def close(self) -> None:
        self.bar.close()


class EMProgress(Callback):
    """A bar over the EM iterations and one over each M-step's steps, or one plain line per
    iteration."""

    def __init__(self, show: Progress, iterations: int, start: int, m_steps: int) -> None:
        self.show, self.iterations, self.m_steps = show, iterations, m_steps
        self.outer = show.bar(total=iterations, initial=start, desc="EM", unit="iter")
        self.m_bar = show.bar(total=m_steps, desc="M-step", unit="step", leave=False)

    def on_step(self, epoch: int, step: int, loss: Tensor) -> None:
        if step == 0 and self.m_bar.n >= self.m_steps:
            self.m_bar.reset()
        self.m_bar.update(1)

    def on_epoch(self, done: int, record: dict[str, Any]) -> None:
        self.show.line("EM iteration", done, self.iterations, record)
        self.outer.update(1)
        self.outer.set_postfix({k: round(v, 3) for k, v in record.items()
                                if k in ("elbo", "loglik", "acc", "nmi")})

    def close(self) -> None:
        self.m_bar.close()
        self.outer.close()


class Checkpointing(Callback):
    """``save(epochs_done)`` after every epoch, and inside an epoch every ``every_steps`` steps
    (0: never) unless the epoch ends there (its own checkpoint follows)."""

    def __init__(self, save: Callable[[int], None], every_steps: int = 0,
                 steps_per_epoch: int = 0) -> None:
        self.save, self.every, self.steps_per_epoch = save, every_steps, steps_per_epoch

    def on_step(self, epoch: int, step: int, loss: Tensor) -> None:
        if self.every and (step + 1) % self.every == 0 and step + 1 < self.steps_per_epoch:
            self.save(epoch)

    def on_epoch(self, done: int, record: dict[str, Any]) -> None:
        self.save(done)
