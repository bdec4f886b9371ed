"""Can a user tell a good seed from a bad one without labels? Label-free criteria of finished
fits against their ACC (issue 16).

    python benchmarks/seed_criteria.py RUN [RUN ...] --dataset fashion-mnist \
        --json benchmarks/results/seed_criteria_fashion-mnist.json

For each run folder (fits of one recipe at different seeds) it computes, from the data and
the fit alone: the final ELBO per datum (``metrics.json``), the model's own log-likelihood per
datum (the importance-weighted estimate of ``varclust.analysis.heldout_pointwise``, the cluster
summed out exactly, 64 proposals a datum, on the same 2 000 data for every run: unlike the
ELBO it does not depend on the guide's temperature or on where the epoch's average was taken),
the mean entropy of the cluster
assignment q(c|x) (``predict().entropy``), and the silhouette (10 000 data), Calinski-Harabasz
and Davies-Bouldin indices (scikit-learn) of the codes under the predicted clusters, the
entropy of the predicted cluster sizes (balance), the chance-corrected share of each datum's 10
nearest neighbours in its predicted cluster (``neighbours``, as ``--select-by neighbours``
scores restarts), and one criterion across the runs: a run's
mean adjusted Rand index with the other runs' partitions (agreement, as ``--select-by
agreement`` scores restarts; the run with the highest is the medoid of the runs). The labels
are read only to score ACC; then the Spearman correlation of each criterion with ACC across
the runs is printed and written to JSON, with the ACC of the run each criterion would keep
and the expected ACC of keeping the best of every 3 runs by it (agreement then scored within
the 3, as ``--restarts 3`` would). For reference it also prints the ``neighbours`` score of the
classes themselves (the labelled partition): a criterion that the classes score below the fits
cannot lead a search for better fits towards the classes.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from run_folders import run_folder_arguments
from scipy.stats import entropy, spearmanr
from sklearn.metrics import (
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)

from varclust import VarClust, clustering_scores, load_dataset
from varclust.analysis import heldout_pointwise
from varclust.inference.regularisers import nearest_neighbours
from varclust.selection import (
    SELECTION_CRITERIA,
    agreement_matrix,
    agreement_scores,
    neighbour_agreement,
)

CRITERIA = ("elbo", "log_likelihood", "mean_entropy", "silhouette", "calinski_harabasz",
            "davies_bouldin", "size_entropy", "agreement", "neighbours")
# the direction in which each criterion is better: +1 higher, -1 lower
BETTER = {"elbo": 1, "log_likelihood": 1, "mean_entropy": -1, "silhouette": 1,
          "calinski_harabasz": 1, "davies_bouldin": -1, "size_entropy": 1, "agreement": 1,
          "neighbours": 1}


def label_free_criteria(vc: VarClust, run: Path, images) -> tuple[dict, np.ndarray]:
    """The criteria of the fit ``vc`` (its folder ``run``) on images (N, ...), and its
    predicted clusters (N,). Nothing here reads a label."""
    codes = vc.encode(images)
    prediction = vc.predict(images)
    labels = np.asarray(prediction.labels)
    subset = np.random.default_rng(0).choice(len(labels), min(10_000, len(labels)),
                                             replace=False)
    history = json.loads((run / "metrics.json").read_text())["history"]
    scored = np.random.default_rng(1).choice(len(labels), min(2_000, len(labels)), replace=False)
    log_likelihood = heldout_pointwise({"fit": vc}, images[scored], 64, seed=0)["fit"]
    return {
        "elbo": history[-1]["elbo"],
        "log_likelihood": float(log_likelihood.mean()),
        "mean_entropy": float(np.asarray(prediction.entropy).mean()),
        "silhouette": float(silhouette_score(codes[subset], labels[subset])),
        "calinski_harabasz": float(calinski_harabasz_score(codes, labels)),
        "davies_bouldin": float(davies_bouldin_score(codes, labels)),
        "size_entropy": float(entropy(np.bincount(labels))),
    }, labels


def best_of(score_group, acc: list[float], size: int = 3) -> float:
    """Mean ACC of the run a criterion keeps, over every ``size`` runs of the list;
    ``score_group(group)`` scores the runs of a group (list of indices), higher kept."""
    kept = [acc[group[int(np.argmax(score_group(group)))]]
            for group in map(list, itertools.combinations(range(len(acc)), size))]
    return float(np.mean(kept))


def main() -> None:
    args = run_folder_arguments(__doc__.split("\n\n")[0])
    data = load_dataset(args.dataset)
    rows, partitions = [], []
    # the neighbours as --select-by neighbours finds them (its k)
    table = nearest_neighbours(data.images, SELECTION_CRITERIA["neighbours"].neighbours).numpy()
    for run in args.runs:
        vc = VarClust.load(run / "checkpoint.pt", device="cpu")
        criteria, predicted = label_free_criteria(vc, run, data.images)
        partitions.append(predicted)
        rows.append({"run": str(run), "seed": vc.config.seed, **criteria,
                     "neighbours": neighbour_agreement(predicted, table),
                     **clustering_scores(data.labels.numpy(), predicted)})
        print(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in rows[-1].items()), flush=True)
    ari = agreement_matrix(partitions)  # once: every group's agreement is a block of it
    for row, value in zip(rows, agreement_scores(ari)):
        row["agreement"] = value
    acc = [r["acc"] for r in rows]
    classes_neighbours = neighbour_agreement(data.labels.numpy(), table)
    print(f"\nneighbours of the classes themselves {classes_neighbours:.4f} (the runs: "
          f"{min(r['neighbours'] for r in rows):.4f} to {max(r['neighbours'] for r in rows):.4f})")
    correlations = {}
    print(f"\nSpearman correlation with ACC over {len(rows)} runs; mean ACC {np.mean(acc):.3f}")
    print(f"{'criterion':<18} {'rho':>5} {'p':>6} {'kept ACC':>9} {'best of 3':>10}")
    for name in CRITERIA:
        values = [r[name] for r in rows]
        result = spearmanr(values, acc)
        signed = BETTER[name] * np.array(values)
        kept = acc[int(np.argmax(signed))]
        # agreement as --restarts 3 scores it: with the group's other members only
        score_group = ((lambda g: agreement_scores(ari[np.ix_(g, g)])) if name == "agreement"
                       else (lambda g, signed=signed: signed[g]))
        of3 = best_of(score_group, acc) if len(rows) >= 3 else float("nan")
        correlations[name] = {"rho": float(result.statistic), "p": float(result.pvalue),
                              "better": "higher" if BETTER[name] > 0 else "lower",
                              "kept_acc": kept, "best_of_3_acc": of3}
        print(f"{name:<18} {result.statistic:+5.2f} {result.pvalue:6.3f} {kept:9.3f} {of3:10.3f}")
    out = args.json or Path(__file__).parent / "results" / f"seed_criteria_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "dataset": args.dataset, "machine": platform.platform(),
        "load_average": list(os.getloadavg()),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": rows, "spearman_with_acc": correlations,
        "classes_neighbours": classes_neighbours,
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
