"""A dataset's CLI recipe over seeds, as a user runs it: ``varclust fit --dataset D --seed S``
from a cold start (a fresh process: imports, data loading, pretraining, the mixture fit, SVI or
EM), timed end to end, with variants of extra flags for ablations (issue 16).

    python benchmarks/cli_recipe.py --dataset fashion-mnist --seeds 5 \
        --variant recipe "" --json benchmarks/results/recipe_fashion-mnist.json
    python benchmarks/cli_recipe.py --dataset fashion-mnist --seeds 2 \
        --variant float32 "--precision float32" --variant svi15 "--epochs 15"

Each ``--variant NAME "FLAGS"`` is a row: the dataset's defaults plus FLAGS (an empty string:
the defaults alone). With ``--share-pretraining`` each seed's autoencoder is pretrained once
(``varclust fit --epochs 0``, timed apart) and every variant starts from it (``--pretrained``),
so the rows differ only in what comes after pretraining:

    python benchmarks/cli_recipe.py --dataset fashion-mnist --seeds 5 --share-pretraining \
        --variant svi10 "--epochs 10" \
        --variant umap_graph "--epochs 10 --umap-graph 1000 --prior gmm-full"

Every seed of every row is one ``varclust fit`` process into a fresh run
folder; its ACC/NMI/ARI are the last epoch's of its ``metrics.json`` (the labels are read only
there, to score). Prints per-seed rows and mean +- sd (ddof 1, ``quality.summarise``) per
variant with the seconds per seed and the load average before and after each fit; writes all
of it to JSON.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from quality import sd_text, summarise

from varclust.restarts import RESTARTS_FILE

METRICS = ("acc", "nmi", "ari")


def fit_process(dataset: str, seed: int, flags: str, threads: int, folder: Path) -> dict:
    """Run one cold-start ``varclust fit`` of ``dataset`` at ``seed`` with ``flags`` into
    folder; returns its seconds, the load around it and the command."""
    command = [sys.executable, "-m", "varclust", "fit", "--dataset", dataset, "--seed",
               str(seed), "--out", str(folder), "--quiet", *shlex.split(flags)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else dict(os.environ)
    load_before = os.getloadavg()
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{done.stderr[-3000:]}")
    return {"seconds": seconds, "load_before": list(load_before),
            "load_after": list(os.getloadavg()), "command": shlex.join(command[1:])}


def kept_folder(folder: Path) -> tuple[Path, list[Path]]:
    """The run folder a fit into ``folder`` kept (``folder`` itself; with ``--restarts``, the
    one ``restarts.json`` names) and every run folder of the fit (the candidates too)."""
    record = folder / RESTARTS_FILE
    if not record.exists():
        return folder, [folder]
    written = json.loads(record.read_text())
    kept = folder / written.get("kept_folder", written["chosen_folder"])  # older records
    return kept, sorted({folder / c["folder"] for c in written["candidates"]} | {kept})


def run_seed(dataset: str, seed: int, flags: str, threads: int, folder: Path) -> dict:
    """One cold-start ``varclust fit`` (:func:`fit_process`); returns its last epoch's scores,
    clusters in use, ACC and NMI per epoch, seconds and the load around it. With
    ``--restarts``, the kept fit's, and ``epoch_seconds``: the SVI epochs' seconds summed over
    every fit of the folder (candidates resumed from earlier runs included)."""
    process = fit_process(dataset, seed, flags, threads, folder)
    kept, runs = kept_folder(folder)
    metrics = json.loads((kept / "metrics.json").read_text())
    epoch_seconds = sum(h["seconds"] for run in runs
                        for h in json.loads((run / "metrics.json").read_text())["history"])
    last = metrics["history"][-1]
    return {"seed": seed, **{m: last[m] for m in METRICS}, "epoch_seconds": epoch_seconds,
            "clusters_used": last.get("clusters_used"), "seconds": process["seconds"],
            "acc_per_epoch": [h.get("acc") for h in metrics["history"]],
            "nmi_per_epoch": [h.get("nmi") for h in metrics["history"]],
            "load_before": process["load_before"], "load_after": process["load_after"],
            "command": process["command"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "FLAGS"),
                        help="a row: NAME and the flags added to the defaults (repeatable)")
    parser.add_argument("--threads", type=int, default=0,
                        help="OMP_NUM_THREADS of each fit (0: torch's default, all cores)")
    parser.add_argument("--keep-runs", type=Path, metavar="DIR",
                        help="write the run folders under DIR/NAME_SEED and keep them (e.g. for "
                        "benchmarks/seed_criteria.py); default: a temporary folder, removed")
    parser.add_argument("--share-pretraining", action="store_true",
                        help="pretrain each seed's autoencoder once (--epochs 0) and start every "
                        "variant from it (--pretrained)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    variants = args.variant or [["defaults", ""]]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    rows: dict[str, list[dict]] = {name: [] for name, _ in variants}
    pretraining = []
    with tempfile.TemporaryDirectory(prefix="cli_recipe_") as tmp:
        root = args.keep_runs or Path(tmp)
        for seed in seeds:
            shared = ""
            if args.share_pretraining:
                folder = root / f"autoencoder_{seed}"
                pretraining.append({"seed": seed, **fit_process(
                    args.dataset, seed, "--epochs 0", args.threads, folder)})
                shared = f" --pretrained {shlex.quote(str(folder))}"
                print(f"autoencoder seed {seed}: {pretraining[-1]['seconds']:.0f} s", flush=True)
            for name, flags in variants:
                row = run_seed(args.dataset, seed, flags + shared, args.threads,
                               root / f"{name}_{seed}")
                rows[name].append(row)
                print(f"{name} seed {seed}: ACC {row['acc']:.3f} NMI {row['nmi']:.3f} "
                      f"ARI {row['ari']:.3f} clusters {row['clusters_used']} "
                      f"{row['seconds']:.0f} s (load {row['load_before'][0]:.1f} -> "
                      f"{row['load_after'][0]:.1f})", flush=True)
    results = {name: {"flags": flags, "rows": rows[name], "summary": summarise(rows[name])}
               for name, flags in variants}

    print(f"\n{args.dataset}, `varclust fit` defaults plus the flags, seeds "
          f"{seeds.start}..{seeds.stop - 1}, mean +- sd")
    print(f"{'variant':<16} {'ACC':>15} {'NMI':>15} {'ARI':>15} {'s / seed':>10}  flags")
    for name, r in results.items():
        s = r["summary"]
        cells = " ".join(f"{s[m]['mean']:>7.3f} {sd_text(s[m])}" for m in METRICS)
        print(f"{name:<16} {cells} {s['seconds']['mean']:>10.0f}  {r['flags']}")
    out = args.json or Path(__file__).parent / "results" / f"cli_recipe_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "dataset": args.dataset, "seeds": list(seeds), "threads": args.threads,
        "machine": platform.platform(), "cpu_count": os.cpu_count(),
        # a seed's partition depends on the floating-point results, so on these (BENCHMARKS.md)
        "versions": {name: importlib.metadata.version(name)
                     for name in ("varclust", "torch", "pyro-ppl")},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "variants": results,
        "shared_pretraining": pretraining,
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
