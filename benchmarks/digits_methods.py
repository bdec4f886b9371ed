"""The UCI digits over seeds: SVI vs EM (MLP decoder) vs EM with the DDPM generator, each as
the ``varclust fit`` command runs it with its digits defaults.

    OMP_NUM_THREADS=1 python benchmarks/digits_methods.py --seeds 5 --jobs 2
    OMP_NUM_THREADS=1 python benchmarks/digits_methods.py --methods em-ddpm \
        --extra "--pretrain-reliance 0.8" --json benchmarks/results/NAME.json

Every run is a subprocess ``python -m varclust.cli fit --dataset digits --seed S ...`` (so the
figures are the CLI's), timed by wall clock. The conv networks take 28x28 or 32x32 images only,
so on the 8x8 digits the decoder rows are MLP. Prints a table (mean +- sd over seeds of ACC, NMI,
ARI, the latent reliance after pretraining, the smallest cluster's share of the data, wall
seconds) and writes every run's numbers to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from quality import sd_text, summarise  # benchmarks/ is on sys.path when run as a script

from varclust import VarClust, load_dataset

RESULTS = Path(__file__).parent / "results"
#: method -> the flags after `varclust fit --dataset digits`
METHODS = {
    "svi": [],
    "em-mlp": ["--method", "em"],
    "em-ddpm": ["--method", "em", "--generator", "ddpm"],
}


def run_one(method: str, seed: int, runs: Path, extra: list[str]) -> dict:
    out = runs / f"{method}_seed{seed}"
    cmd = [sys.executable, "-m", "varclust.cli", "fit", "--dataset", "digits", "--seed",
           str(seed), "--device", "cpu", "--quiet", "--out", str(out), *METHODS[method], *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    last = metrics["history"][-1]
    images = load_dataset("digits").images
    labels = VarClust.load(out, device="cpu").predict(images).labels
    shares = np.bincount(labels, minlength=metrics["config"]["num_clusters"]) / len(labels)
    row = {"method": method, "seed": seed, "acc": last["acc"], "nmi": last["nmi"],
           "ari": last["ari"], "seconds": seconds, "min_cluster_share": float(shares.min()),
           "latent_reliance": metrics.get("latent_reliance"),
           "command": "varclust " + " ".join(cmd[3:])}
    print(f"  {method} seed {seed}: ACC {row['acc']:.4f}, NMI {row['nmi']:.4f}, "
          f"min share {row['min_cluster_share']:.3f}, {seconds:.0f} s", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--extra", default="", metavar="FLAGS",
                        help="flags appended to every method's command, e.g. "
                             "\"--pretrain-reliance 0.8\"")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/varclust_digits_methods"))
    parser.add_argument("--json", type=Path, default=RESULTS / "digits_methods.json")
    args = parser.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    tasks = [(m, s) for s in seeds for m in args.methods]
    extra = shlex.split(args.extra)
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda t: run_one(*t, args.runs, extra), tasks))
    print(f"\nUCI digits (1797 images), seeds {list(seeds)}, mean +- sd; the CLI's defaults "
          f"{'and ' + args.extra if extra else ''}")
    print(f"{'method':<10} {'ACC':>15} {'NMI':>15} {'ARI':>15} {'min share':>10} "
          f"{'reliance':>9} {'seconds':>8}")
    table = {}
    for method in args.methods:
        mine = [r for r in rows if r["method"] == method]
        summary = summarise(mine)
        table[method] = summary
        cells = [f"{summary[k]['mean']:.3f} {sd_text(summary[k])}"
                 for k in ("acc", "nmi", "ari")]
        rel = [r["latent_reliance"] for r in mine if r["latent_reliance"] is not None]
        print(f"{method:<10} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15} "
              f"{min(r['min_cluster_share'] for r in mine):>10.3f} "
              f"{(f'{np.mean(rel):.2f}' if rel else '-'):>9} {summary['seconds']['mean']:>8.0f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "seeds": list(seeds), "extra_flags": args.extra, "jobs": args.jobs,
        "machine": platform.platform(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "summary": table, "runs": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
