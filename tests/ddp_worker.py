"""One rank of the 2-process gloo tests in test_distributed.py (run by torchrun, not by pytest).

    torchrun --nproc_per_node 2 tests/ddp_worker.py OUT_DIR

Writes OUT_DIR/rank{R}.pt with (a) the parameters after one data-parallel SVI step on this
rank's shard of the first batch, computed in float64 with the guide's noise fixed per datum,
(b) the clustering accuracy of a data-parallel fit of a small synthetic mixture, and (c) the
parameters and history of a data-parallel fit with ``revive_clusters`` (4 clusters for 3 blobs,
so a cluster is split into at every epoch), (d) the parameters of a data-parallel fit stopped
after 5 steps (mid-epoch, on every rank) and resumed from its checkpoint, and of the same fit
run through, and (e) the parameters of a data-parallel fit with the UMAP graph term
(``umap_graph``), a term outside the ELBO that calls the guide outside DDP's forward and draws
other edges on each rank.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from varclust import VarClust, cluster_accuracy
from varclust.guides import MarginalGuide
from varclust.inference.distributed import (
    DistributedSVITrainer,
    init_distributed,
    rank_batches,
    shutdown_distributed,
)

NUM_DATA, DATA_DIM, K, D, GLOBAL_BATCH = 40, 6, 3, 2, 16
LEARNING_RATE = 1e-2


class FixedNoiseGuide(MarginalGuide):
    """q(z | x) with z_i = loc(x_i) + scale(x_i) * eps_i and eps (N, D) a fixed table, so one
    datum gets the same z in whichever process or batch it is. The density is q's."""

    def __init__(self, encoder: torch.nn.Module, noise: Tensor) -> None:
        super().__init__(encoder)
        self.register_buffer("noise", noise)

    def forward(self, x: Tensor, indices: Tensor | None = None, num_data: int | None = None):
        from varclust.model.generative import data_plate

        loc, scale = self.encoder(x)
        z = loc + scale * self.noise[indices]
        log_q = dist.Normal(loc, scale).log_prob(z).sum(-1)
        with data_plate(x, indices, num_data):
            pyro.sample("z", dist.Delta(z, log_density=log_q, event_dim=1))


def one_step_problem():
    """Data, noise and a freshly built model + fixed-noise guide, float64, all from seed 0."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(NUM_DATA, DATA_DIM, generator=g, dtype=torch.float64)
    noise = torch.randn(NUM_DATA, D, generator=g, dtype=torch.float64)
    pyro.set_rng_seed(0)
    vc = VarClust(K, latent_dim=D, hidden=(16,), pretrain_epochs=0, device="cpu")
    vc.build((DATA_DIM,))
    guide = FixedNoiseGuide(vc.guide.encoder, noise)
    return vc.model, guide, x


def synthetic_mixture(seed: int = 1, per_cluster: int = 120, dim: int = 24):
    """3 clusters of 2-D codes on a circle of radius 4, decoded by a frozen random MLP to
    Bernoulli pixel probabilities, then binarised: (x (N, dim), y (N,))."""
    g = torch.Generator().manual_seed(seed)
    angles = torch.arange(K) * 2 * math.pi / K
    centres = 4.0 * torch.stack([angles.cos(), angles.sin()], 1)
    y = torch.arange(K).repeat_interleave(per_cluster)
    z = centres[y] + 0.3 * torch.randn(len(y), 2, generator=g)
    w1, w2 = torch.randn(2, 32, generator=g), torch.randn(32, dim, generator=g)
    x = torch.bernoulli(torch.sigmoid(torch.tanh(z @ w1) @ w2), generator=g)
    order = torch.randperm(len(y), generator=g)
    return x[order], y[order]


def mixture_config() -> dict:
    return dict(num_clusters=K, latent_dim=2, hidden=(32, 32), epochs=25, pretrain_epochs=25,
                batch_size=64, seed=1, device="cpu")


def revival_config() -> dict:
    """4 clusters for the 3 blobs and a 20 % floor: the move acts at nearly every epoch."""
    return {**mixture_config(), "num_clusters": 4, "revive_clusters": 0.2, "epochs": 10}


def resume_config() -> dict:
    """Seed 2 (a run's stream seeds once overflowed numpy's 32 bits from seed 2 on), a
    checkpoint after every step."""
    return {**mixture_config(), "epochs": 3, "pretrain_epochs": 3, "seed": 2,
            "checkpoint_every_steps": 1}


def umap_graph_config() -> dict:
    """The mixture fit with the UMAP graph term of the pretrained codes (8 neighbours)."""
    return {**mixture_config(), "epochs": 5, "pretrain_epochs": 10, "umap_graph": 1.0,
            "umap_neighbours": 8}


def stop_after(steps: int, start_step):
    """A ``start_step`` that stops the fit with KeyboardInterrupt before step ``steps`` + 1,
    on every rank alike, and otherwise runs ``start_step``."""
    seen = [0]

    def start(trainer, epoch: int, step: int) -> None:
        seen[0] += 1
        if seen[0] > steps:
            raise KeyboardInterrupt
        start_step(trainer, epoch, step)

    return start


def stopped_and_resumed(xs: Tensor, ys: Tensor, ctx, out: Path) -> tuple[dict, dict]:
    """(d): the parameters of the fit run through, and of the fit stopped and resumed."""
    through = VarClust(**resume_config()).fit(xs, ys, out_dir=out / "through", progress=False,
                                              distributed=ctx)
    start_step = DistributedSVITrainer.start_step
    DistributedSVITrainer.start_step = stop_after(5, start_step)
    try:
        VarClust(**resume_config()).fit(xs, ys, out_dir=out / "stopped", progress=False,
                                        distributed=ctx)
    except KeyboardInterrupt:
        pass
    finally:
        DistributedSVITrainer.start_step = start_step
    torch.distributed.barrier()  # rank 0 has written the checkpoint of step 5
    resumed = VarClust(**resume_config()).fit(xs, ys, out_dir=out / "stopped", resume=True,
                                              progress=False, distributed=ctx)
    return tuple({k: v.detach().clone() for k, v in fit.guide.named_parameters()}
                 for fit in (through, resumed))


def main(out: Path) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    # (a) one step in float64
    torch.set_default_dtype(torch.float64)
    model, guide, x = one_step_problem()
    trainer = DistributedSVITrainer(model, guide, LEARNING_RATE, context=ctx)
    idx = next(rank_batches(NUM_DATA, GLOBAL_BATCH, 0, 0, ctx))
    loss = trainer.step(x[idx], idx, NUM_DATA)
    params = {k: v.detach().clone() for k, v in trainer.elbo.module.named_parameters()}
    torch.set_default_dtype(torch.float32)
    # (b) a data-parallel fit of the synthetic mixture through the estimator
    xs, ys = synthetic_mixture()
    vc = VarClust(**mixture_config()).fit(xs, ys, progress=False, distributed=ctx)
    acc = cluster_accuracy(ys.numpy(), vc.predict(xs).labels)
    # (c) the same with a move outside DDP's all-reduce: every rank must follow rank 0's split
    revived = VarClust(**revival_config()).fit(xs, ys, progress=False, distributed=ctx)
    through, resumed = stopped_and_resumed(xs, ys, ctx, out)
    # (e) a term outside the ELBO whose gradient must be all-reduced with the ELBO's
    with_graph = VarClust(**umap_graph_config()).fit(xs, ys, progress=False, distributed=ctx)
    torch.save({"indices": idx, "loss": loss, "params": params, "acc": acc,
                "through_params": through, "resumed_params": resumed,
                "history": vc.history, "revival_history": revived.history,
                "revival_params": {k: v.detach().clone()
                                   for k, v in revived.model.named_parameters()}
                | {k: v.detach().clone() for k, v in revived.guide.named_parameters()},
                "umap_graph_params": {k: v.detach().clone()
                                      for k, v in with_graph.guide.named_parameters()}},
               out / f"rank{ctx.rank}.pt")
    shutdown_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
