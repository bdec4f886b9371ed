"""Training from scratch against the pretrained recipe, per guide, over seeds (issue 12).

    python benchmarks/from_scratch.py --dataset digits --seeds 5 \
        --json benchmarks/results/from_scratch_digits.json

Each row is a guide under a recipe: ``scratch`` (the CLI's ``--recipe scratch``: no pretraining,
KL warm-up, the cluster-information term outside the ELBO) or ``pretrained`` (the digits
defaults: autoencoder pretraining, then the mixture fitted to the codes). Prints ACC/NMI/ARI as
mean +- sd over the seeds, the agreement of q(c|x) with the model's p(c|z) (guides with their
own q(c|x)), and seconds per seed; writes the per-seed rows, machine and load to JSON.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import numpy as np
import torch
from quality import run_varclust, sd_text, summarise, write_json

from varclust import FitConfig, VarClust, load_dataset
from varclust.cli import DATASET_DEFAULTS, RECIPES


def agreement(vc: VarClust, images: torch.Tensor) -> float:
    """Fraction of data whose q(c|x) mode equals the mode of p(c | z = E[z|x]) under the prior."""
    with torch.no_grad():
        vc.guide.eval()
        q = vc.guide.cluster_logits(images, vc.model.prior).argmax(-1)
        p = vc.model.prior.log_joint(vc.guide.encode(images)[0]).argmax(-1)
    return float((q == p).float().mean())


def _value(text: str):
    """A --set value as Python reads it (int, float, bool, tuple), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="FitConfig fields over the recipe's, e.g. latent_dim=5")
    parser.add_argument("--subset", type=int, default=0, help="first N images (0: all)")
    parser.add_argument("--guides", nargs="+", default=["marginal", "mixture", "relaxed"])
    parser.add_argument("--recipes", nargs="+", default=["scratch", "pretrained"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = load_dataset(args.dataset)
    images, y = data.images, data.labels.numpy()
    if args.subset:
        images, y = images[: args.subset], y[: args.subset]
    base = FitConfig(device="cpu", **DATASET_DEFAULTS.get(args.dataset, {}))
    overrides = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
    results: dict = {}
    for recipe in args.recipes:
        for guide in args.guides:
            name = f"{guide}/{recipe}"
            settings = {**RECIPES[recipe].settings_for(args.dataset, overrides), **overrides}
            rows = []
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                config = base.replace(guide=guide, seed=seed, **settings)
                row = {"seed": seed, **run_varclust(
                    images, y, config,
                    measure=lambda vc: {"agreement_q_p": agreement(vc, images)})}
                rows.append(row)
                print(f"{name:22s} seed {seed}: ACC {row['acc']:.3f} NMI {row['nmi']:.3f} "
                      f"agree {row['agreement_q_p']:.3f} ({row['seconds']:.0f} s)", flush=True)
            results[name] = {"runs": rows, **summarise(rows),
                             "seeds": [row["seed"] for row in rows],
                             "config": base.replace(guide=guide, **settings).to_dict()}
            if args.json:
                write_json(args.json, args, len(y), base, results,
                           subset_kind="the first N images")
    columns = ("ACC", "NMI", "ARI")
    print(f"\n{'guide/recipe':22s}", *(f"{h:>14s}" for h in columns), f"{'agree':>6s} s/seed")
    for name, r in results.items():
        cell = "  ".join(f"{r[k]['mean']:.3f} {sd_text(r[k])}" for k in ("acc", "nmi", "ari"))
        agree = np.mean([row["agreement_q_p"] for row in r["runs"]])
        print(f"{name:22s} {cell} {agree:6.3f} {r['seconds']['mean']:7.0f}")


if __name__ == "__main__":
    main()
