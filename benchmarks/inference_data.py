"""How the importance-weighted log-likelihood of ``to_inference_data`` behaves as the number of
importance samples S grows, and what it costs.

For one fit to the digits, for each S: the wall time of ``to_inference_data``, the mean over data
of ArviZ's lppd (log of the mean of the R estimates' weights, i.e. an IWAE estimate from R * S
proposals), elpd_loo per datum, p_loo, and the share of Pareto k above 0.7. Prints a table and
writes JSON (default benchmarks/results/inference_data.json).

    python benchmarks/inference_data.py --draws 20 --importance 1 4 16 64
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import arviz as az
import numpy as np
import torch

from varclust import VarClust, clustering_scores, load_dataset
from varclust.analysis import to_inference_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=20, help="R, estimates per datum")
    parser.add_argument("--importance", type=int, nargs="+", default=[1, 4, 16, 64],
                        help="values of S, proposals per estimate")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--pretrain-epochs", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/inference_data.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_dataset("digits")
    x, y = data.images, data.labels.numpy()
    t0 = time.perf_counter()
    vc = VarClust(10, hidden=(args.hidden,), epochs=args.epochs,
                  pretrain_epochs=args.pretrain_epochs, batch_size=128, seed=0, device="cpu")
    vc.fit(x, progress=False)
    fit_seconds = time.perf_counter() - t0
    scores = clustering_scores(y, vc.predict(x).labels)
    rows = []
    for s in args.importance:
        t0 = time.perf_counter()
        idata = to_inference_data(vc, x, args.draws, importance_samples=s, seed=0)
        seconds = time.perf_counter() - t0
        log_lik = idata.log_likelihood["x"].values[0]  # (R, N)
        lppd = np.logaddexp.reduce(log_lik, axis=0) - np.log(len(log_lik))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loo = az.loo(idata, pointwise=True)
        rows.append({
            "importance_samples": s,
            "seconds": seconds,
            "lppd_per_datum": float(lppd.mean()),
            "elpd_loo_per_datum": float(loo.elpd_loo / len(x)),
            "p_loo": float(loo.p_loo),
            "share_pareto_k_above_0.7": float(np.mean(loo.pareto_k.values > 0.7)),
            "sd_between_draws": float(log_lik.std(0).mean()),
        })
    print(f"digits, N={len(x)}, R={args.draws}; fit {fit_seconds:.1f} s, "
          f"ACC {scores['acc']:.3f}, final ELBO/datum {vc.history[-1]['elbo']:.2f}")
    print(f"{'S':>4} {'seconds':>8} {'lppd/N':>9} {'elpd_loo/N':>11} {'p_loo':>8} "
          f"{'k>0.7':>6} {'sd(draws)':>9}")
    for r in rows:
        print(f"{r['importance_samples']:>4} {r['seconds']:>8.2f} {r['lppd_per_datum']:>9.3f} "
              f"{r['elpd_loo_per_datum']:>11.3f} {r['p_loo']:>8.1f} "
              f"{r['share_pareto_k_above_0.7']:>6.2f} {r['sd_between_draws']:>9.3f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.platform(), "threads": args.threads, "num_data": len(x),
        "draws": args.draws, "fit_seconds": fit_seconds, "scores": scores,
        "final_elbo_per_datum": vc.history[-1]["elbo"], "rows": rows,
    }, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
