"""What the consensus of R fits is worth, read off fits already made: for random R-subsets of
the given run folders (fits of one data set that differ only in their seed), the ACC/NMI/ARI
of the consensus partition (``varclust.inference.consensus.consensus_responsibilities``, its
most probable cluster a datum) against the single fits'. It scores the consensus itself, not
the fit that ``--restarts R --consensus W`` then trains on it.

    python benchmarks/consensus_subsets.py /tmp/runs/vat1/vat1_{0..24} --sizes 3 5 7 9 \
        --draws 60 --json benchmarks/results/consensus_subsets_fashion-mnist.json

Prints a table (mean +- sd over the draws, the worst draw) and writes it with every fit's
scores to JSON. The labels are read from the run folders, only to score.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from varclust.analysis.run_data import load_run
from varclust.inference.consensus import consensus_responsibilities
from varclust.metrics import clustering_scores

METRICS = ("acc", "nmi", "ari")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of one data set")
    parser.add_argument("--sizes", nargs="+", type=int, default=[3, 5, 7])
    parser.add_argument("--draws", type=int, default=60, help="random subsets per size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    posteriors, labels = [], None
    for run in args.runs:
        fit, data = load_run(run)
        if data.labels is None:
            raise SystemExit(f"{run} records no labels to score against")
        posteriors.append(fit.predict(data.images).responsibilities)
        labels = data.labels.numpy()
    singles = [clustering_scores(labels, r.argmax(1)) for r in posteriors]
    rng = np.random.default_rng(args.seed)
    table = {"single": singles}
    for size in args.sizes:
        if not 2 <= size <= len(posteriors):
            raise SystemExit(f"--sizes must be between 2 and the {len(posteriors)} runs, got "
                             f"{size}")
        table[f"consensus of {size}"] = [
            clustering_scores(labels, consensus_responsibilities(
                [posteriors[i] for i in rng.choice(len(posteriors), size, replace=False)]
            ).argmax(1)) for _ in range(args.draws)]
    print(f"{len(posteriors)} fits; consensus of random subsets, {args.draws} draws a size")
    print(f"{'':<16}" + "".join(f"{m.upper():>22}" for m in METRICS))
    summary = {}
    for name, rows in table.items():
        summary[name] = {m: {"mean": float(np.mean([r[m] for r in rows])),
                             "sd": float(np.std([r[m] for r in rows], ddof=1)),
                             "min": float(np.min([r[m] for r in rows]))} for m in METRICS}
        print(f"{name:<16}" + "".join(
            f"{s['mean']:>8.3f} +- {s['sd']:.3f} ({s['min']:.3f})"
            for s in summary[name].values()))
    if args.json:
        args.json.write_text(json.dumps({
            "runs": [str(r) for r in args.runs], "draws": args.draws, "seed": args.seed,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "summary": summary, "single_fits": singles}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
