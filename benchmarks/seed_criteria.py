"""Can a user tell a good seed from a bad one without labels? Label-free criteria of finished
fits against their ACC (issue 16).

    python benchmarks/seed_criteria.py RUN [RUN ...] --dataset fashion-mnist \
        --json benchmarks/results/seed_criteria_fashion-mnist.json

For each run folder (fits of one recipe at different seeds) it computes, from the data and
the fit alone: the final ELBO per datum (``metrics.json``), the mean entropy of the cluster
assignment q(c|x) (``predict().entropy``), and the silhouette (10 000 data), Calinski-Harabasz
and Davies-Bouldin indices (scikit-learn) of the codes under the predicted clusters. The labels
are read only to score ACC; then the Spearman correlation of each criterion with ACC across
the runs is printed and written to JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

from varclust import VarClust, clustering_scores, load_dataset

CRITERIA = ("elbo", "mean_entropy", "silhouette", "calinski_harabasz", "davies_bouldin")


def label_free_criteria(vc: VarClust, run: Path, images) -> tuple[dict, np.ndarray]:
    """The criteria of the fit ``vc`` (its folder ``run``) on images (N, ...), and its
    predicted clusters (N,). Nothing here reads a label."""
    codes = vc.encode(images)
    prediction = vc.predict(images)
    labels = np.asarray(prediction.labels)
    subset = np.random.default_rng(0).choice(len(labels), min(10_000, len(labels)),
                                             replace=False)
    history = json.loads((run / "metrics.json").read_text())["history"]
    return {
        "elbo": history[-1]["elbo"],
        "mean_entropy": float(np.asarray(prediction.entropy).mean()),
        "silhouette": float(silhouette_score(codes[subset], labels[subset])),
        "calinski_harabasz": float(calinski_harabasz_score(codes, labels)),
        "davies_bouldin": float(davies_bouldin_score(codes, labels)),
    }, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders of `varclust fit`")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = load_dataset(args.dataset)
    rows = []
    for run in args.runs:
        vc = VarClust.load(run / "checkpoint.pt", device="cpu")
        criteria, predicted = label_free_criteria(vc, run, data.images)
        rows.append({"run": str(run), "seed": vc.config.seed, **criteria,
                     **clustering_scores(data.labels.numpy(), predicted)})
        print(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in rows[-1].items()), flush=True)
    acc = [r["acc"] for r in rows]
    correlations = {}
    print(f"\nSpearman correlation with ACC over {len(rows)} runs")
    for name in CRITERIA:
        result = spearmanr([r[name] for r in rows], acc)
        correlations[name] = {"rho": float(result.statistic), "p": float(result.pvalue)}
        print(f"{name:<18} rho {result.statistic:+.2f}  p {result.pvalue:.3f}")
    out = args.json or Path(__file__).parent / "results" / f"seed_criteria_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "dataset": args.dataset, "machine": platform.platform(),
        "load_average": list(os.getloadavg()),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": rows, "spearman_with_acc": correlations,
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
