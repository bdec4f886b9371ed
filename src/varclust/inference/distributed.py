"""Data-parallel SVI over several processes with ``torch.distributed`` (launched by torchrun).

Each process ("rank") holds the whole data set and the same model, and trains on its own shard
of every epoch (``torch.utils.data.DistributedSampler`` over the indices). The ELBO module
``TraceEnum_ELBO(...)(model, guide)`` is wrapped in ``DistributedDataParallel``, so the
gradients of every parameter, the mixture's weights, means and scales included, are averaged
over the ranks before the optimiser steps.

Scaling: ``batch_size`` is the GLOBAL batch; each rank takes ``batch_size / world_size`` data and
scales its ELBO by N / (its batch), with N the global data size (the ``data`` plate is given
``num_data=N`` and the rank's indices, not Pyro's automatic subsampling, which would draw the
same indices on every rank). DDP's average of the ranks' gradients then equals the gradient of
one process on the concatenated batch.

Monte Carlo noise is seeded per rank and per epoch, so ranks draw different z and a run resumed
at an epoch's start draws the same ones again.

A step is skipped (the non-finite guard) when the loss or the all-reduced gradient norm is not
finite; the gradient norm is the same on every rank, so ranks skip together unless a rank's loss
alone is infinite with a finite gradient.

Launch (CPU: backend ``gloo``; GPU: ``nccl``, one GPU per process)::

    torchrun --nproc_per_node 2 -m varclust.cli fit --dataset digits --out runs/ddp --distributed
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from .svi import SVITrainer

__all__ = [
    "DistributedContext",
    "DistributedSVITrainer",
    "init_distributed",
    "launched_by_torchrun",
    "rank_batches",
    "shutdown_distributed",
]

#: environment variables that torchrun (and torch.multiprocessing launchers) set for every rank
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the process group.

    Attributes:
        rank: 0 .. world_size - 1 over all nodes.
        world_size: the number of processes.
        device: this rank's device (``cuda:LOCAL_RANK`` on GPUs, else ``cpu``).
        backend: ``"nccl"`` or ``"gloo"``.
    """

    rank: int
    world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs and progress bars."""
        return self.rank == 0

    def describe(self) -> str:
        return f"{self.world_size} processes ({self.backend}), rank 0 on {self.device}"

    def wrap(self, module: nn.Module) -> DistributedDataParallel:
        """``module`` in DistributedDataParallel: its gradients are averaged over the ranks."""
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def batches(
        self, num_data: int, batch_size: int, seed: int, epoch: int, device: Any = None
    ) -> Iterator[Tensor]:
        """This rank's index batches of an epoch (see :func:`rank_batches`)."""
        return rank_batches(num_data, batch_size, seed, epoch, self)

    def barrier(self) -> None:
        dist.barrier()

    def per_rank_batch(self, batch_size: int) -> int:
        """The share of a global batch that each rank takes."""
        if batch_size % self.world_size:
            raise ValueError(
                f"batch_size {batch_size} does not split evenly over {self.world_size} "
                f"processes; pass a multiple of {self.world_size}"
            )
        return batch_size // self.world_size


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group that torchrun set up (``env://``): ``nccl`` when this rank trains
    on a GPU, ``gloo`` on the CPU. Idempotent: an existing group is reused.

    Args:
        device: "auto" (a GPU per process when there are GPUs), "cpu" or "cuda".
    """
    if not dist.is_initialized() and not launched_by_torchrun():
        raise RuntimeError(
            "distributed training needs the environment that torchrun sets "
            f"({', '.join(TORCHRUN_VARIABLES)}); launch with e.g. "
            "`torchrun --nproc_per_node 2 -m varclust.cli fit ... --distributed`"
        )
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(
            f"with --distributed the device is 'auto', 'cpu' or 'cuda' (each process takes the "
            f"GPU of its LOCAL_RANK), not {device!r}"
        )
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but PyTorch sees no GPU; use 'cpu'")
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        rank_device = torch.device("cuda", local_rank)
    else:
        rank_device = torch.device("cpu")
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    elif dist.get_backend() != backend:
        raise RuntimeError(
            f"the process group uses {dist.get_backend()!r} but device {rank_device} needs "
            f"{backend!r}"
        )
    return DistributedContext(dist.get_rank(), dist.get_world_size(), rank_device, backend)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_batches(
    num_data: int, batch_size: int, seed: int, epoch: int, ctx: DistributedContext
) -> Iterator[Tensor]:
    """This rank's index batches of one epoch, each ``batch_size / world_size`` long.

    The shuffle depends only on (seed, epoch) and is the same on every rank; the
    ``DistributedSampler`` gives each rank a disjoint share (padded by repeating a few indices
    so that every rank takes the same number of steps, as DDP needs).
    """
    sampler = DistributedSampler(
        range(num_data), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed
    )
    sampler.set_epoch(epoch)
    order = torch.tensor(list(sampler), dtype=torch.long, device=ctx.device)
    yield from order.split(ctx.per_rank_batch(batch_size))


class DistributedSVITrainer(SVITrainer):
    """:class:`SVITrainer` with the ELBO module wrapped in ``DistributedDataParallel``.

    Every parameter of model and guide must exist before this is built (DDP registers them at
    construction and broadcasts rank 0's values, so all ranks start equal).
    """

    def __init__(self, *args: Any, context: DistributedContext, **kwargs: Any) -> None:
        """Arguments as :class:`SVITrainer`, and ``context`` from :func:`init_distributed`."""
        self.context = context
        super().__init__(*args, **kwargs)

    def wrap_elbo(self, elbo: nn.Module) -> nn.Module:
        return self.context.wrap(elbo)

    @torch.no_grad()
    def sync_parameters(self) -> None:
        """Copy rank 0's parameters to every rank (after steps taken outside DDP)."""
        for p in self.elbo.module.parameters():
            dist.broadcast(p, src=0)

    def batches(self, num_data: int, batch_size: int, seed: int, epoch: int, device):
        self._seed = seed
        return rank_batches(num_data, batch_size, seed, epoch, self.context)

    def start_step(self, epoch: int, step: int) -> None:
        """A fresh Monte Carlo stream per (seed, epoch, step, rank): ranks draw different
        noise, and a run resumed anywhere, mid-epoch included, draws the same noise as before
        (a checkpoint holds rank 0's RNG state only, so the other ranks' streams could not be
        restored from it)."""
        stream = np.random.SeedSequence([self._seed, epoch, step, self.context.rank])
        pyro.set_rng_seed(int(stream.generate_state(1)[0]))  # 32 bits, as numpy's seed needs

    def reduce_epoch_total(self, total: Tensor, batches: int) -> tuple[Tensor, int]:
        """Sum the epoch's losses and batch counts over the ranks (one all-reduce per epoch)."""
        packed = torch.stack([total, torch.tensor(float(batches), device=total.device)])
        dist.all_reduce(packed)
        return packed[0], int(packed[1].item())
