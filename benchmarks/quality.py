"""Clustering quality on a whole data set, over several seeds, beside two classical baselines.

    python benchmarks/quality.py --dataset fashion-mnist --seeds 3

Prints a table (mean +- standard deviation over seeds of ACC, NMI, ARI, wall time) and writes
JSON (every seed's numbers and the settings) to --json.
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
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from varclust import FitConfig, VarClust, clustering_scores, load_dataset


def run_kmeans(x: np.ndarray, y: np.ndarray, k: int, seed: int) -> dict:
    t0 = time.perf_counter()
    pred = KMeans(k, n_init=3, random_state=seed).fit_predict(x)
    return {**clustering_scores(y, pred), "seconds": time.perf_counter() - t0}


def run_pca_gmm(x: np.ndarray, y: np.ndarray, k: int, seed: int) -> dict:
    t0 = time.perf_counter()
    codes = PCA(50, random_state=seed).fit_transform(x)
    pred = GaussianMixture(k, covariance_type="diag", random_state=seed).fit_predict(codes)
    return {**clustering_scores(y, pred), "seconds": time.perf_counter() - t0}


def run_varclust(images, y: np.ndarray, config: FitConfig) -> dict:
    """Fit (pretraining included) and score; y is passed only to record ACC per epoch."""
    t0 = time.perf_counter()
    vc = VarClust(config=config).fit(images, y, progress=False)
    pred = vc.predict(images)
    return {
        **clustering_scores(y, pred.labels),
        "seconds": time.perf_counter() - t0,
        "final_elbo": vc.history[-1]["elbo"] if vc.history else None,
        "acc_per_epoch": [h["acc"] for h in vc.history],
        "seconds_per_epoch": [h["seconds"] for h in vc.history],
    }


def summarise(rows: list[dict]) -> dict:
    out = {}
    for key in ("acc", "nmi", "ari", "seconds"):
        vals = np.array([r[key] for r in rows], dtype=float)
        out[key] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1
                    else 0.0}
    return out


def write_json(out: Path, args, num_data: int, config: FitConfig, results: dict) -> None:
    out.write_text(json.dumps({
        "dataset": args.dataset, "num_data": num_data, "seeds": args.seeds,
        "config": config.to_dict(), "machine": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results": results,
    }, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--network", default="mlp")
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--json", type=Path, default=None,
                        help="output JSON (default benchmarks/results/quality_DATASET.json)")
    args = parser.parse_args()

    data = load_dataset(args.dataset)
    x = data.images.flatten(1).numpy()
    y = data.labels.numpy()
    config = FitConfig(
        num_clusters=args.clusters, latent_dim=args.latent_dim, network=args.network,
        epochs=args.epochs, pretrain_epochs=args.pretrain_epochs, learning_rate=args.lr,
        batch_size=args.batch_size,
    )
    methods = {} if args.skip_baselines else {
        "k-means (pixels)": lambda s: run_kmeans(x, y, args.clusters, s),
        "GMM (PCA-50)": lambda s: run_pca_gmm(x, y, args.clusters, s),
    }
    methods[f"varclust ({args.network}, marginal guide)"] = (
        lambda s: run_varclust(data.images, y, config.replace(seed=s))
    )
    out = args.json or Path(__file__).parent / "results" / f"quality_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, fn in methods.items():
        rows = []
        for seed in range(args.seeds):
            rows.append({"seed": seed, **fn(seed)})
            print(f"  {name} seed {seed}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in rows[-1].items() if isinstance(v, float)), flush=True)
            results[name] = {"runs": rows, "summary": summarise(rows)}
            write_json(out, args, len(data), config, results)

    print(f"\n{args.dataset}, N={len(data)}, {args.seeds} seeds (mean +- sd)")
    print(f"{'method':<34} {'ACC':>15} {'NMI':>15} {'ARI':>15} {'seconds':>12}")
    for name, res in results.items():
        s = res["summary"]
        cells = [f"{s[k]['mean']:.3f} +- {s[k]['std']:.3f}" for k in ("acc", "nmi", "ari")]
        print(f"{name:<34} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15} "
              f"{s['seconds']['mean']:>12.1f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
