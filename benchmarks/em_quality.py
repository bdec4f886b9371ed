"""Clustering quality of the EM fit (ClusterDDPM's loop) over seeds, with per-cluster samples.

    python benchmarks/em_quality.py --dataset fashion-mnist --generator conv --seeds 3
    python benchmarks/em_quality.py --generator ddpm --subset 2000 --seeds 1 --diffusion-steps 400

Prints a table (mean +- sd over seeds of ACC, NMI, ARI, wall time), writes JSON (every seed's
numbers, per-iteration history, settings, machine) to --json and the first seed's per-cluster
sample grid as PNG beside it. ``--subset N`` fits the first N images only (a reduced run: say so
when reporting it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from quality import sd_text, summarise  # benchmarks/ is on sys.path when run as a script

from varclust import FitConfig, VarClust, clustering_scores, load_dataset
from varclust.analysis.plots import plot_cluster_samples

RESULTS = Path(__file__).parent / "results"


def run_seed(images: torch.Tensor, y: np.ndarray, config: FitConfig, grid: Path | None,
             per_cluster: int) -> dict:
    t0 = time.perf_counter()
    vc = VarClust(config=config).fit(images, y, progress=False)
    seconds = time.perf_counter() - t0
    pred = vc.predict(images)
    row = {**clustering_scores(y, pred.labels), "seconds": seconds,
           "history": vc.history, "pretrain_losses": vc.pretrain_losses,
           "latent_reliance": vc.latent_reliance}
    if grid is not None:
        t1 = time.perf_counter()
        torch.manual_seed(config.seed)
        samples = [vc.sample(k, per_cluster) for k in range(config.num_clusters)]
        row["sampling_seconds"] = time.perf_counter() - t1
        plot_cluster_samples(samples, grid, title=(
            f"{config.generator_name} {config.method.upper()}: rows = clusters"))
    return row


def write_results(out: Path, args, images: torch.Tensor, config: FitConfig,
                  rows: list[dict]) -> None:
    """The JSON of the seeds run so far: settings, machine, load, summary and every row."""
    out.write_text(json.dumps({
        "dataset": args.dataset, "num_data": len(images), "subset": args.subset,
        "seeds": len(rows), "config": config.to_dict(), "machine": platform.platform(),
        "cpu_threads": torch.get_num_threads(), "load_average": list(os.getloadavg()),
        "device": "cuda" if config.device != "cpu" and torch.cuda.is_available() else "cpu",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "summary": summarise(rows), "runs": rows,
    }, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--subset", type=int, default=0, help="first N images only (0: all)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--network", default="conv", help="encoder (and default decoder)")
    parser.add_argument("--generator", default="conv", choices=("mlp", "conv", "ddpm"))
    parser.add_argument("--method", default="em", choices=("em", "svi"),
                        help="svi: the same networks by joint SVI for em-iterations x "
                        "m-step-epochs epochs, for comparison")
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--em-iterations", type=int, default=20)
    parser.add_argument("--m-step-epochs", type=int, default=1)
    parser.add_argument("--e-step-iterations", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-decay", type=float, default=1.0,
                        help="per epoch (SVI) or per M-step epoch (EM)")
    parser.add_argument("--e-step", default="clusterddpm", choices=("clusterddpm", "vade", "means"))
    parser.add_argument("--ddpm-pretrain", default="autoencoder",
                        choices=("autoencoder", "diffusion"))
    parser.add_argument("--diffusion-pretrain-epochs", type=int, default=100,
                        help="ddpm: most epochs of the generator on the frozen codes")
    parser.add_argument("--pretrain-reliance", type=float, default=FitConfig.pretrain_reliance,
                        help="ddpm: stop the generator's pretraining at this latent reliance")
    parser.add_argument("--kl-warmup-iterations", type=int, default=0,
                        help="EM iterations over which the M-step's KL weight rises to 1")
    parser.add_argument("--revive-clusters", type=float, default=0.0,
                        help="revive clusters holding less than this fraction (0: off)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--diffusion-steps", type=int, default=400)
    parser.add_argument("--diffusion-width", type=int, default=32)
    parser.add_argument("--diffusion-weight", type=float, default=10.0,
                        help="ddpm: the noise loss's weight against the KL (10: ClusterDDPM's)")
    parser.add_argument("--sample-steps", type=int, default=50)
    parser.add_argument("--per-cluster", type=int, default=8, help="images per grid row")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None,
                        help="output JSON (default benchmarks/results/em_GENERATOR_DATASET.json)")
    args = parser.parse_args()

    data = load_dataset(args.dataset)
    images, labels = data.images, data.labels
    if args.subset:
        images, labels = images[: args.subset], labels[: args.subset]
    y = labels.numpy()
    config = FitConfig(
        num_clusters=args.clusters, latent_dim=args.latent_dim, network=args.network,
        method=args.method, generator=args.generator,
        epochs=args.em_iterations * args.m_step_epochs, pretrain_epochs=args.pretrain_epochs,
        em_iterations=args.em_iterations, m_step_epochs=args.m_step_epochs,
        e_step_iterations=args.e_step_iterations, learning_rate=args.lr,
        pretrain_lr=args.lr, lr_decay=args.lr_decay, em_lr_decay=args.lr_decay,
        e_step=args.e_step, ddpm_pretrain=args.ddpm_pretrain, batch_size=args.batch_size,
        diffusion_pretrain_epochs=args.diffusion_pretrain_epochs,
        pretrain_reliance=args.pretrain_reliance,
        kl_warmup_iterations=args.kl_warmup_iterations,
        diffusion_steps=args.diffusion_steps, diffusion_width=args.diffusion_width,
        diffusion_weight=args.diffusion_weight,
        sample_steps=args.sample_steps, device=args.device,
        revive_clusters=args.revive_clusters,
    )
    name = f"{args.method}_{args.generator}_{args.dataset}"
    name += f"_n{args.subset}" if args.subset else ""
    out = args.json or RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        grid = out.with_name(f"{out.stem}_samples.png") if seed == 0 else None
        rows.append({"seed": seed, **run_seed(images, y, config.replace(seed=seed), grid,
                                             args.per_cluster)})
        print(f"  seed {seed}: " + ", ".join(f"{k} {rows[-1][k]:.4f}" for k in
                                             ("acc", "nmi", "ari", "seconds")), flush=True)
        write_results(out, args, images, config, rows)  # after every seed: nothing lost

    summary = summarise(rows)
    label = f"{args.method.upper()}, {args.network} encoder, {args.generator} generator"
    print(f"\n{args.dataset}, N={len(images)}, {args.seeds} seed(s) (mean +- sd), "
          f"{config.pretrain_epochs} pretraining epochs, {config.em_iterations} EM iterations "
          f"(or as many SVI epochs)")
    print(f"{'method':<40} {'ACC':>15} {'NMI':>15} {'ARI':>15} {'seconds':>10}")
    cells = [f"{summary[k]['mean']:.3f} {sd_text(summary[k])}" for k in ("acc", "nmi", "ari")]
    print(f"{label:<40} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15} "
          f"{summary['seconds']['mean']:>10.1f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
