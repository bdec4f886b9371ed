"""Clustering quality on a whole data set, over several seeds, beside two classical baselines.

    python benchmarks/quality.py --dataset fashion-mnist --seeds 3
    python benchmarks/quality.py --guide relaxed --prior bayes-gmm --clusters 30 \
        --concentration 0.05 --global-guide mean-field --skip-baselines

With --subset M the runs use M images drawn at random (seed 0) instead of the whole data set:
a reduced run, to be labelled as such wherever it is reported.

With --compare, the named variants (guides, priors; see VARIANTS) are fitted per seed from one
autoencoder pretrained with the base settings (``fit(..., pretrained=...)``), so they differ in
the guide or prior alone; their seconds are the SVI time, the pretraining's is reported apart.
--autoencoders DIR keeps those autoencoders for later invocations (e.g. more epochs, another
variant):

    python benchmarks/quality.py --compare marginal mixture relaxed bayes-gmm-30 \
        --autoencoders runs/autoencoders

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
from varclust.inference.run_folder import data_fingerprint


def run_kmeans(x: np.ndarray, y: np.ndarray, k: int, seed: int) -> dict:
    t0 = time.perf_counter()
    pred = KMeans(k, n_init=3, random_state=seed).fit_predict(x)
    return {**clustering_scores(y, pred), "seconds": time.perf_counter() - t0}


def run_pca_gmm(x: np.ndarray, y: np.ndarray, k: int, seed: int) -> dict:
    t0 = time.perf_counter()
    codes = PCA(50, random_state=seed).fit_transform(x)
    pred = GaussianMixture(k, covariance_type="diag", random_state=seed).fit_predict(codes)
    return {**clustering_scores(y, pred), "seconds": time.perf_counter() - t0}


#: --compare: settings that differ from the base configuration
VARIANTS: dict[str, dict] = {
    "marginal": {"guide": "marginal"},
    "mixture": {"guide": "mixture"},
    "relaxed": {"guide": "relaxed"},
    "bayes-gmm-30": {"prior": "bayes-gmm", "num_clusters": 30, "dirichlet_concentration": 0.05,
                     "global_guide": "mean-field"},
    # the truncated Dirichlet-process prior, truncation 30 (issue 17)
    "dp-30": {"prior": "dp", "num_clusters": 30},
    # the same with a Gamma prior of 100 x the pseudo-data on the precisions (fewer, broader)
    "dp-30-nu100": {"prior": "dp", "num_clusters": 30, "dp_scale_pseudo_count": 100.0},
    "dp-30-nu1000": {"prior": "dp", "num_clusters": 30, "dp_scale_pseudo_count": 1000.0},
    # full covariances: Wishart priors on the components' precision matrices
    "dp-full-30": {"prior": "dp-full", "num_clusters": 30},
    # the epoch's settling on the means E[z|x] rather than draws of q(z|x) (not an ELBO step)
    "dp-30-means": {"prior": "dp", "num_clusters": 30, "dp_epoch_settle_on": "means"},
    # no settling after the epochs (the DP before 2026-12-02)
    "dp-30-unsettled": {"prior": "dp", "num_clusters": 30, "dp_epoch_settle_steps": 0},
    # a quarter of the epoch's settling steps (50 of the default 200): the cost of the settling
    "dp-30-settle50": {"prior": "dp", "num_clusters": 30, "dp_epoch_settle_steps": 50},
    # nu = 100 and the confidence term alone (lambda N mean H(q(c|x)), outside the ELBO; no
    # balance, which would reward using all 30 components)
    "dp-30-nu100-confidence": {"prior": "dp", "num_clusters": 30, "dp_scale_pseudo_count": 100.0,
                               "cluster_information": 1.0, "cluster_balance": 0.0},
    # with SCAN's neighbour term (outside the ELBO): a boundary through a dense blob is paid for
    "dp-30-neighbour": {"prior": "dp", "num_clusters": 30, "neighbour_consistency": 1.0},
    # ClusterDDPM's loop on the same networks: one M-step epoch + one E-step per iteration
    "em": {"method": "em", "m_step_epochs": 1},
}


def run_varclust(images, y: np.ndarray, config: FitConfig, pretrained: VarClust | None = None,
                 measure=None) -> dict:
    """Fit (pretraining included unless ``pretrained``) and score; y is passed only to record
    ACC per epoch. ``measure(vc)`` returns more numbers for the row."""
    load_before = list(os.getloadavg())
    t0 = time.perf_counter()
    vc = VarClust(config=config).fit(images, y, progress=False, pretrained=pretrained)
    pred = vc.predict(images)
    counts = np.bincount(pred.labels, minlength=config.num_clusters)
    prior_summary = vc.model.prior.epoch_summary()  # e.g. the DP's weights in use and alpha
    return {
        **clustering_scores(y, pred.labels),
        "seconds": time.perf_counter() - t0,
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
        "final_elbo": vc.history[-1]["elbo"] if vc.history else None,
        # clusters holding at least 0.5% of the data, and (Bayesian prior) weights > 1/(10K)
        "clusters_used": int((counts >= 0.005 * len(y)).sum()),
        # clusters holding at least 1 % of the data (issue 17's measure for the DP prior)
        "clusters_in_use": int((counts >= 0.01 * len(y)).sum()),
        # the Bayesian priors' weights in use (None for the point-estimate priors)
        "clusters_weighted": prior_summary.get("clusters_in_use"),
        "prior_summary": prior_summary,
        "acc_per_epoch": [h["acc"] for h in vc.history],
        # the mean ELBO per datum of each epoch (label-free: what a selection may read)
        "elbo_per_epoch": [h["elbo"] for h in vc.history],
        "seconds_per_epoch": [h["seconds"] for h in vc.history],
        # the splits of `revive_clusters` after each epoch (0 when the move is off)
        "revived_per_epoch": [h.get("revived_clusters", 0) for h in vc.history],
        **(measure(vc) if measure is not None else {}),
    }


def summarise(rows: list[dict]) -> dict:
    """Mean and sd (ddof 1) of each score over the rows (seeds); sd None for one seed."""
    out = {}
    for key in ("acc", "nmi", "ari", "seconds"):
        vals = np.array([r[key] for r in rows], dtype=float)
        out[key] = {"mean": float(vals.mean()), "n": len(vals),
                    "std": float(vals.std(ddof=1)) if len(vals) > 1 else None}
    return out


def sd_text(summary: dict) -> str:
    """'+- sd' over the seeds, or '(1 seed)'."""
    return f"+- {summary['std']:.3f}" if summary["std"] is not None else "(1 seed)"


def write_json(out: Path, args, num_data: int, config: FitConfig, results: dict,
               subset_kind: str = "a random sample (seed 0)") -> None:
    """The run's JSON; ``config`` is the base FitConfig (its ``seed`` is not a run's: each
    row records its own)."""
    out.write_text(json.dumps({
        "dataset": args.dataset, "num_data": num_data, "subset": args.subset,
        "subset_kind": subset_kind if args.subset else None,
        "seeds": args.seeds, "first_seed": args.first_seed,
        "config": config.to_dict(), "machine": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results": results,
    }, indent=2))


def check_cached_autoencoder(vc: VarClust, wanted: FitConfig, images, run: Path) -> None:
    """Refuse an ``--autoencoders`` cache pretrained on other data or with other settings."""
    theirs = {k: v for k, v in vc.config.to_dict().items() if k != "device"}
    ours = {k: v for k, v in wanted.to_dict().items() if k != "device"}
    diffs = [f"{k}: cached {theirs.get(k)!r} vs {v!r}" for k, v in ours.items()
             if theirs.get(k) != v]
    if vc.data_fingerprint_ != data_fingerprint(vc._prepare(images)):
        diffs.append("the data (another data set or --subset)")
    if diffs:
        raise SystemExit(f"{run} holds an autoencoder of another configuration "
                         f"({'; '.join(diffs)}): give another --autoencoders folder")


def compared_variants(names: list[str], images, y: np.ndarray, config: FitConfig,
                      folder: Path | None = None) -> dict:
    """A method per variant; the first of them to run for a seed pretrains its autoencoder,
    kept in folder/seedS (and taken from there by later runs) when a folder is given."""
    pretrained: dict[int, tuple[VarClust, float]] = {}

    def autoencoder(seed: int) -> tuple[VarClust, float]:
        if seed in pretrained:
            return pretrained[seed]
        run = folder / f"seed{seed}" if folder is not None else None
        if run is not None and (run / "seconds.json").exists():
            vc = VarClust.load(run, device=config.device)
            check_cached_autoencoder(vc, config.replace(seed=seed, epochs=0), images, run)
            seconds = json.loads((run / "seconds.json").read_text())["pretrain_seconds"]
        else:
            t0 = time.perf_counter()
            vc = VarClust(config=config.replace(seed=seed, epochs=0)).fit(
                images, progress=False, out_dir=run)
            seconds = time.perf_counter() - t0
            if run is not None:
                (run / "seconds.json").write_text(json.dumps({"pretrain_seconds": seconds}))
        pretrained[seed] = vc, seconds
        return pretrained[seed]

    def run(name: str, seed: int) -> dict:
        source, seconds = autoencoder(seed)
        variant = config.replace(seed=seed, **VARIANTS[name])
        if variant.method == "em":  # as many M-step epochs as the SVI variants' epochs
            variant = variant.replace(em_iterations=config.epochs)
        return {**run_varclust(images, y, variant, pretrained=source),
                "pretrain_seconds": seconds}

    return {f"varclust {name}": (lambda s, n=name: run(n, s)) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--network", default="mlp")
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--prior", default="gmm", help="gmm, normal or bayes-gmm")
    parser.add_argument("--guide", default="marginal", help="marginal, mixture or relaxed")
    parser.add_argument("--likelihood", default="bernoulli")
    parser.add_argument("--concentration", type=float, default=1.0,
                        help="bayes-gmm: Dirichlet concentration per cluster (< 1 sparse)")
    parser.add_argument("--global-guide", default="map", help="bayes-gmm: map or mean-field")
    parser.add_argument("--subset", type=int, default=None,
                        help="use this many images drawn at random (a reduced run)")
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--compare", nargs="+", choices=sorted(VARIANTS), default=None,
                        help="fit these variants from one pretrained autoencoder per seed")
    parser.add_argument("--autoencoders", type=Path, default=None,
                        help="--compare: keep the pretrained autoencoders in this folder and "
                        "reuse those already there (same data and settings)")
    parser.add_argument("--json", type=Path, default=None,
                        help="output JSON (default benchmarks/results/quality_DATASET.json)")
    args = parser.parse_args()

    data = load_dataset(args.dataset)
    images, labels = data.images, data.labels
    if args.subset is not None and args.subset < len(images):
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
        images, labels = images[keep[: args.subset]], labels[keep[: args.subset]]
    x = images.flatten(1).numpy()
    y = labels.numpy()
    config = FitConfig(
        num_clusters=args.clusters, latent_dim=args.latent_dim, network=args.network,
        epochs=args.epochs, pretrain_epochs=args.pretrain_epochs, learning_rate=args.lr,
        batch_size=args.batch_size, prior=args.prior, guide=args.guide,
        likelihood=args.likelihood, dirichlet_concentration=args.concentration,
        global_guide=args.global_guide,
    )
    methods = {} if args.skip_baselines else {
        "k-means (pixels)": lambda s: run_kmeans(x, y, args.clusters, s),
        "GMM (PCA-50)": lambda s: run_pca_gmm(x, y, args.clusters, s),
    }
    if args.compare is None:
        methods[f"varclust ({args.network}, {args.prior}, {args.guide})"] = (
            lambda s: run_varclust(images, y, config.replace(seed=s))
        )
    else:
        methods.update(compared_variants(args.compare, images, y, config, args.autoencoders))
    out = args.json or Path(__file__).parent / "results" / f"quality_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, fn in methods.items():
        rows = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            rows.append({"seed": seed, **fn(seed)})
            print(f"  {name} seed {seed}: " + ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()
                if isinstance(v, (float, int)) and k != "seed"), flush=True)
            results[name] = {"runs": rows, "summary": summarise(rows)}
            write_json(out, args, len(y), config, results)

    print(f"\n{args.dataset}, N={len(y)}, {args.seeds} seeds (mean +- sd)")
    print(f"{'method':<34} {'ACC':>15} {'NMI':>15} {'ARI':>15} {'seconds':>12}")
    for name, res in results.items():
        s = res["summary"]
        cells = [f"{s[k]['mean']:.3f} {sd_text(s[k])}" for k in ("acc", "nmi", "ari")]
        print(f"{name:<34} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15} "
              f"{s['seconds']['mean']:>12.1f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
