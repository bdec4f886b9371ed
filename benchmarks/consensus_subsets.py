"""What the consensus of R fits is worth, read off fits already made: for random R-subsets of
the given run folders (fits of one data set that differ only in their seed), the ACC/NMI/ARI
of the consensus partition (``varclust.inference.consensus.consensus_responsibilities``, its
most probable cluster a datum) against the single fits'. It scores the consensus itself, not
the fit that ``--restarts R --consensus W`` then trains on it.

    python benchmarks/consensus_subsets.py /tmp/runs/vat1/vat1_{0..24} --sizes 3 5 7 9 \
        --draws 60 --json benchmarks/results/consensus_subsets_fashion-mnist.json

With ``--ranked-by CRITERION`` (a ``--select-by`` criterion whose score is the fit's own,
e.g. ``neighbours``) each drawn subset is also ranked by that label-free score: the row "best
of R by C" is the fit that ``--restarts R --select-by C`` keeps, and "top m of R by C" (``--top
m``) the consensus of the m best-scored fits of the R; the Spearman correlation of the score with
ACC over all the fits is printed. Every size's rows share the same draws.

    python benchmarks/consensus_subsets.py /tmp/runs/base/base_{0..24} --sizes 5 10 \
        --ranked-by neighbours --top 2 3 --draws 300 --json results.json

Prints a table (mean +- sd over the draws, the worst draw) and writes it with every fit's
scores to JSON. The labels are read from the run folders, only to score.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from varclust.analysis.run_data import load_run
from varclust.inference.consensus import consensus_responsibilities
from varclust.metrics import clustering_scores
from varclust.selection import SELECTION_CRITERIA

METRICS = ("acc", "nmi", "ari")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of one data set")
    parser.add_argument("--sizes", nargs="+", type=int, default=[3, 5, 7])
    parser.add_argument("--draws", type=int, default=60, help="random subsets per size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ranked-by", choices=[c.name for c in SELECTION_CRITERIA.values()
                                                if c.per_fit],
                        help="a label-free criterion scoring each fit alone (elbo: the last "
                             "epoch's average in metrics.json, not --restarts' rescoring)")
    parser.add_argument("--top", nargs="+", type=int, default=[],
                        help="with --ranked-by: the consensus of the m best-scored of each subset")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.top and not args.ranked_by:
        raise SystemExit("--top ranks each subset's fits: give --ranked-by too")
    fits, posteriors, elbos, labels, images = [], [], [], None, None
    for run in args.runs:
        fit, data = load_run(run)
        if data.labels is None:
            raise SystemExit(f"{run} records no labels to score against")
        fits.append(fit)
        posteriors.append(fit.predict(data.images).responsibilities)
        elbos.append(fit.history[-1]["elbo"] if fit.history else float("nan"))
        labels, images = data.labels.numpy(), data.images
    singles = [clustering_scores(labels, r.argmax(1)) for r in posteriors]
    scores = (SELECTION_CRITERIA[args.ranked_by].scores(fits, images, elbos)
              if args.ranked_by else None)
    rng = np.random.default_rng(args.seed)
    table = {"single": singles}
    for size in args.sizes:
        if not 2 <= size <= len(posteriors):
            raise SystemExit(f"--sizes must be between 2 and the {len(posteriors)} runs, got "
                             f"{size}")
        draws = [rng.choice(len(posteriors), size, replace=False) for _ in range(args.draws)]
        table[f"consensus of {size}"] = [_consensus_scores(labels, posteriors, d) for d in draws]
        if scores is None:
            continue
        ranked = [sorted(d, key=lambda i: -scores[i]) for d in draws]
        table[f"best of {size} by {args.ranked_by}"] = [singles[r[0]] for r in ranked]
        for m in (m for m in args.top if 2 <= m < size):
            table[f"top {m} of {size} by {args.ranked_by}"] = [
                _consensus_scores(labels, posteriors, r[:m]) for r in ranked]
    print(f"{len(posteriors)} fits; consensus of random subsets, {args.draws} draws a size")
    if scores is not None:
        rho = spearmanr(scores, [s["acc"] for s in singles])
        print(f"Spearman of {args.ranked_by} with ACC over the fits: {rho.statistic:+.2f} "
              f"(p {rho.pvalue:.3f})")
    width = max(len(name) for name in table) + 2
    print(f"{'':<{width}}" + "".join(f"{m.upper():>22}" for m in METRICS))
    summary = {}
    for name, rows in table.items():
        summary[name] = {m: {"mean": float(np.mean([r[m] for r in rows])),
                             "sd": float(np.std([r[m] for r in rows], ddof=1)),
                             "min": float(np.min([r[m] for r in rows]))} for m in METRICS}
        print(f"{name:<{width}}" + "".join(
            f"{s['mean']:>8.3f} +- {s['sd']:.3f} ({s['min']:.3f})"
            for s in summary[name].values()))
    if args.json:
        args.json.write_text(json.dumps({
            "runs": [str(r) for r in args.runs], "draws": args.draws, "seed": args.seed,
            "ranked_by": args.ranked_by, "scores": scores,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "summary": summary, "single_fits": singles}, indent=2))
        print(f"wrote {args.json}")


def _consensus_scores(labels: np.ndarray, posteriors: list[np.ndarray],
                      picked) -> dict[str, float]:
    """ACC/NMI/ARI of the consensus of the fits at indices ``picked`` (their posteriors, each
    (N, K)), its most probable cluster a datum."""
    return clustering_scores(labels, consensus_responsibilities(
        [posteriors[i] for i in picked]).argmax(1))


if __name__ == "__main__":
    main()
