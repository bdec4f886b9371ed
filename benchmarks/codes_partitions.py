"""The merged start's partitions of an autoencoder's codes, against pretraining epochs, the
pretraining schedule and the mixture's seed, with label-free criteria and a consensus.

Builds the networks a fit would pretrain (``VarClust.build``, seeded as ``fit`` seeds them),
pretrains them with the library's :class:`~varclust.inference.pretrain.Pretrainer` (Adam at
--lr; with --schedule, a torch learning-rate scheduler stepped after every batch: ``cosine``
decays from --lr to 0, ``one-cycle`` rises to --lr over the first 30 % and anneals), and after
every --every epochs scores, on the codes, the partitions the ``merged`` start would begin SVI
from: for each of --mixture-seeds mixture seeds, the argmax of ``merge_components(
component_responsibilities(codes, 2K, s), K, s)`` (:mod:`varclust.model.mixture_fit`, exactly
``merged_responsibilities(codes, K, s)``). Beside ACC and NMI, label-free criteria a user could
select a mixture seed by: ``agreement`` (mean adjusted Rand index with the other seeds'
partitions), ``confidence`` (minus the mean entropy of the merged responsibilities) and
``smallest`` (the smallest cluster's share); and the ``consensus``: every seed's components
merged together. The labels score the partitions and never enter a criterion. Prints a table
and writes JSON.

    python benchmarks/codes_partitions.py --dataset fashion-mnist --hidden 256,256,1024 \\
        --seed 0 --schedule constant --every 10 --mixture-seeds 4 \\
        --json benchmarks/results/codes_partitions_constant_fashion-mnist_seed0.json
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pyro
import torch
from results_json import write_results
from scipy.stats import spearmanr

from varclust import FitConfig, VarClust, clustering_scores, load_dataset
from varclust.inference.prediction import encode_means
from varclust.inference.pretrain import Pretrainer
from varclust.model.mixture_fit import (
    MERGED_COMPONENTS_PER_CLUSTER,
    component_responsibilities,
    merge_components,
)
from varclust.selection import agreement_matrix, agreement_scores

#: --schedule -> (optimizer, total steps, peak learning rate) -> a scheduler stepped per batch
SCHEDULES = {
    "constant": lambda opt, total, lr: torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0),
    "cosine": lambda opt, total, lr: torch.optim.lr_scheduler.CosineAnnealingLR(opt, total),
    "one-cycle": lambda opt, total, lr: torch.optim.lr_scheduler.OneCycleLR(opt, lr, total),
}
CRITERIA = ("agreement", "confidence", "smallest")


class ScheduledPretrainer(Pretrainer):
    """:class:`Pretrainer` whose learning rate follows ``scheduler(optimizer)`` per batch."""

    def __init__(self, *args, scheduler, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.scheduler = scheduler(self.optimizer)

    def train_step(self, x: torch.Tensor) -> None:
        super().train_step(x)
        self.scheduler.step()


def score_partitions(codes: torch.Tensor, labels: np.ndarray, num_clusters: int,
                     mixture_seeds: int) -> dict:
    """The merged partitions of codes (N, D) for mixture seeds 0 .. S-1, their scores and
    label-free criteria, and the consensus of all their components."""
    responsibilities, rows = [], []
    for s in range(mixture_seeds):
        r = component_responsibilities(codes, MERGED_COMPONENTS_PER_CLUSTER * num_clusters, s)
        merged = merge_components(r, num_clusters, s)  # (N, K)
        predicted = merged.argmax(1)
        entropy = -(merged * np.log(np.clip(merged, 1e-12, None))).sum(1).mean()
        shares = np.bincount(predicted, minlength=num_clusters) / len(predicted)
        rows.append({"mixture_seed": s, **clustering_scores(labels, predicted),
                     "confidence": float(-entropy), "smallest": float(shares.min()),
                     "predicted": predicted})
        responsibilities.append(r)
    agreement = agreement_scores(agreement_matrix([row["predicted"] for row in rows]))
    for row, value in zip(rows, agreement):
        row["agreement"] = value
    consensus = merge_components(np.concatenate(responsibilities, 1) / mixture_seeds,
                                 num_clusters, 0).argmax(1)
    picked = {c: rows[int(np.argmax([r[c] for r in rows]))]["acc"] for c in CRITERIA}
    for row in rows:
        del row["predicted"]
    return {"partitions": rows, "consensus": clustering_scores(labels, consensus),
            "picked_acc": picked}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--hidden", default="256,256,1024", help="encoder widths")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--every", type=int, default=10, help="score the codes every E epochs")
    parser.add_argument("--lr", type=float, default=1e-3, help="(peak) learning rate")
    parser.add_argument("--schedule", default="constant", choices=tuple(SCHEDULES))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--mixture-seeds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    data = load_dataset(args.dataset)
    x, y = data.images, data.labels.numpy()
    hidden = tuple(int(h) for h in args.hidden.split(","))
    vc = VarClust(config=FitConfig(num_clusters=args.clusters, hidden=hidden, seed=args.seed,
                                   device="cpu"))
    pyro.set_rng_seed(args.seed)  # as VarClust.fit, so the networks start as a fit's do
    vc.build(tuple(x.shape[1:]))
    total = args.epochs * math.ceil(len(x) / args.batch_size)
    pretrainer = ScheduledPretrainer(
        vc.model.pretraining_loss(vc.guide.encoder), args.lr, args.batch_size, args.seed,
        scheduler=lambda opt: SCHEDULES[args.schedule](opt, total, args.lr))
    snapshots = []
    t0 = time.perf_counter()
    print(f"| epoch | loss | ACC, mean +- sd over {args.mixture_seeds} mixture seeds (min, max) "
          f"| NMI | consensus ACC | picked by {', '.join(CRITERIA)} | s |")
    print("|---|---|---|---|---|---|---|")

    def on_epoch(epoch: int, loss: float) -> None:
        if (epoch + 1) % args.every:
            return
        with torch.no_grad():
            codes = encode_means(vc.guide, x)
        scores = score_partitions(codes, y, args.clusters, args.mixture_seeds)
        acc = np.array([p["acc"] for p in scores["partitions"]])
        nmi = np.mean([p["nmi"] for p in scores["partitions"]])
        snapshots.append({"epoch": epoch + 1, "loss": loss, **scores,
                          "seconds": time.perf_counter() - t0})
        picked = ", ".join(f"{scores['picked_acc'][c]:.3f}" for c in CRITERIA)
        print(f"| {epoch + 1} | {loss:.2f} | {acc.mean():.3f} +- {acc.std(ddof=1):.3f} "
              f"({acc.min():.3f}, {acc.max():.3f}) | {nmi:.3f} | {scores['consensus']['acc']:.3f} "
              f"| {picked} | {time.perf_counter() - t0:.0f} |", flush=True)

    pretrainer.run(x, args.epochs, on_epoch)
    partitions = [p for s in snapshots for p in s["partitions"]]
    for c in CRITERIA:
        rho = spearmanr([p[c] for p in partitions], [p["acc"] for p in partitions])
        print(f"Spearman({c}, ACC) over the {len(partitions)} partitions: "
              f"{rho.statistic:+.2f} (p {rho.pvalue:.2f})")
    out = args.json or Path(f"benchmarks/results/codes_partitions_{args.schedule}_"
                            f"{args.dataset}_seed{args.seed}.json")
    write_results(out, dataset=args.dataset, seed=args.seed, hidden=list(hidden),
                  schedule=args.schedule, lr=args.lr, batch_size=args.batch_size,
                  epochs=args.epochs, mixture_seeds=args.mixture_seeds, snapshots=snapshots)


if __name__ == "__main__":
    main()
