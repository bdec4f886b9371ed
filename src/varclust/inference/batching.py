"""Mini-batches over data held in memory (on the training device when it fits)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

__all__ = ["batched_apply", "epoch_batches"]


def epoch_batches(
    num_data: int, batch_size: int, seed: int, epoch: int, device: torch.device
) -> Iterator[Tensor]:
    """Index batches of a shuffled epoch; the order depends only on (seed, epoch), so a resumed
    run sees the same batches. The last short batch is kept."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_data, generator=generator).to(device)
    yield from order.split(batch_size)


@torch.no_grad()
def batched_apply(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 2048) -> Tensor:
    """fn over x (N, ...) in batches on fn's device, concatenated: returns (N, ...)."""
    return torch.cat([fn(chunk) for chunk in x.split(batch_size)])
