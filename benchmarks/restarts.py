"""Best of R fits by ELBO against single fits, from the same fits (issue 12).

    OMP_NUM_THREADS=1 python benchmarks/restarts.py --dataset digits --groups 3 --restarts 3 \
        --recipe scratch --guide relaxed --json benchmarks/results/restarts_digits.json

Group g fits the seeds first + g R, ..., first + g R + R - 1 with
:func:`varclust.restarts.fit_restarts` (the ``--restarts`` of ``varclust fit``) and keeps the
highest ELBO. Every candidate is also a single fit of the recipe, so one run gives both rows:
the single fits (groups x R seeds) and the kept fits (one per group), ACC/NMI/ARI as mean +- sd,
and the Spearman correlation of ELBO and ACC over the candidates. The labels score the fits;
they never enter the choice.

``--select-by agreement | confidence`` keeps the candidate whose clusters agree most with the
others' or whose assignments are the most decided (``varclust fit --select-by``); the "best of
r by ELBO" lines at the end still rank by the ELBO.
``--select-after E`` chooses after E SVI epochs and continues only the chosen fit (the
``--select-after`` of ``varclust fit``): the candidate rows are then the candidates at epoch E
(their ELBO and scores there), the kept rows the continued fits at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from quality import sd_text, summarise  # benchmarks/ is on sys.path when run as a script
from scipy.stats import spearmanr

from varclust import FitConfig, clustering_scores, load_dataset
from varclust.cli import DATASET_DEFAULTS, RECIPES
from varclust.restarts import fit_restarts
from varclust.selection import SELECTION_CRITERIA


def expected_kept(rows: list[dict], restarts: int, key: str = "acc") -> float:
    """The mean ``key`` of the highest-ELBO fit over every set of ``restarts`` of the fits in
    ``rows``: what best-of-R would give on average, read off the single fits already run."""
    kept = [max(group, key=lambda r: r["elbo"])[key]
            for group in itertools.combinations(rows, restarts)]
    return float(np.mean(kept))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--groups", type=int, default=3)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--recipe", default="scratch", choices=sorted(RECIPES))
    parser.add_argument("--guide", default="relaxed")
    parser.add_argument("--select-after", type=int, default=None)
    parser.add_argument("--select-by", default="elbo", choices=tuple(SELECTION_CRITERIA))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = load_dataset(args.dataset)
    y = data.labels.numpy()
    config = FitConfig(device="cpu", guide=args.guide,
                       **{**DATASET_DEFAULTS.get(args.dataset, {}),
                          **RECIPES[args.recipe].settings_for(args.dataset, {})})
    singles, kept = [], []
    for group in range(args.groups):
        first = args.first_seed + group * args.restarts
        t0 = time.perf_counter()
        result = fit_restarts(config.replace(seed=first), data.images, y,
                              restarts=args.restarts, select_after=args.select_after,
                              select_by=args.select_by, progress=False)
        seconds = time.perf_counter() - t0
        rows = []
        for fit, candidate in zip(result.fits, result.candidates, strict=True):
            at_score = fit.history[candidate.epochs - 1]  # the epoch it was scored at
            # the candidate's own epochs up to its scoring (the group's total, the chosen
            # fit's continuation and the scoring included, is the kept row's "seconds")
            own = sum(h["seconds"] for h in fit.history[:candidate.epochs])
            rows.append({"seed": candidate.seed, "elbo": candidate.elbo,
                         args.select_by: candidate.score,
                         "epochs": candidate.epochs, "seconds": own,
                         **{k: at_score[k] for k in ("acc", "nmi", "ari")}})
            print(f"group {group} seed {candidate.seed}: ELBO {candidate.elbo:.3f} at epoch "
                  f"{candidate.epochs}, ACC {rows[-1]['acc']:.3f} NMI {rows[-1]['nmi']:.3f}",
                  flush=True)
        singles += rows
        final = clustering_scores(y, result.best.predict(data.images).labels)
        kept.append({**rows[result.chosen], **final, "epochs": len(result.best.history),
                     "seconds": seconds, "group": group})
        print(f"group {group}: kept seed {kept[-1]['seed']} (ACC {kept[-1]['acc']:.3f}), "
              f"{seconds:.0f} s", flush=True)
        if args.json:
            rho = (spearmanr([r["elbo"] for r in singles], [r["acc"] for r in singles])
                   if len(singles) > 2 else None)
            args.json.write_text(json.dumps({
                "dataset": args.dataset, "recipe": args.recipe, "guide": args.guide,
                "restarts": args.restarts, "first_seed": args.first_seed,
                "select_after": args.select_after, "select_by": args.select_by,
                "config": config.to_dict(), "machine": platform.platform(),
                "cpu_threads": torch.get_num_threads(), "load_average": list(os.getloadavg()),
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "single": {"runs": singles, **summarise(singles)},
                "best_of_restarts": {"runs": kept, **summarise(kept)},
                "spearman_elbo_acc": None if rho is None else {
                    "rho": float(rho.statistic), "p": float(rho.pvalue)},
            }, indent=2))
    at = "" if args.select_after is None else f" at epoch {args.select_after}"
    for name, rows in ((f"candidates{at}", singles), (f"best of {args.restarts}", kept)):
        s = summarise(rows)
        cells = "  ".join(f"{k.upper()} {s[k]['mean']:.3f} {sd_text(s[k])}"
                          for k in ("acc", "nmi", "ari"))
        print(f"{name:14s} ({len(rows)}): {cells}  {s['seconds']['mean']:.0f} s")
    if len(singles) > 2:
        rho = spearmanr([r["elbo"] for r in singles], [r["acc"] for r in singles])
        print(f"Spearman(ELBO, ACC) over the {len(singles)} fits: {rho.statistic:.2f} "
              f"(p {rho.pvalue:.3f})")
        for r in range(1, min(len(singles), 6)):
            print(f"best of {r} by ELBO over every {r} of the {len(singles)} fits: ACC "
                  f"{expected_kept(singles, r):.3f}, NMI {expected_kept(singles, r, 'nmi'):.3f}")


if __name__ == "__main__":
    main()
