"""Calibrate the diffusion generator's pretraining on the UCI digits: EM from generators that
rely on the codes to different degrees.

    OMP_NUM_THREADS=1 python benchmarks/ddpm_reliance.py --stages 5 20 30 40 60
    OMP_NUM_THREADS=1 python benchmarks/ddpm_reliance.py --stages 40 --weights 1 10 100

One autoencoder pretraining (MLP 500-500-2000, D = 10, 100 epochs), then for each number E of
``--stages`` the generator (U-Net width 16) trained on the frozen codes for E epochs with no
early stop (``pretrain_reliance=0``), its ``latent_reliance`` measured, and an EM fit from it
(the CLI's digits EM settings: Adam 5e-4 constant, ClusterDDPM E-step) for every
``--weights`` value of ``diffusion_weight`` and ``--warmups`` KL warm-up length. Prints one row
per fit (reliance, ACC/NMI/ARI, smallest mixture weight, smallest cluster share) and writes
them to --json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from varclust import VarClust, clustering_scores, load_dataset

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", type=int, nargs="+", default=[5, 20, 30, 40, 60])
    parser.add_argument("--weights", type=float, nargs="+", default=[10.0])
    parser.add_argument("--warmups", type=int, nargs="+", default=[0])
    parser.add_argument("--em-iterations", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULTS / "ddpm_reliance_digits.json")
    args = parser.parse_args()
    data = load_dataset("digits")
    x, y = data.images, data.labels.numpy()
    common = dict(generator="ddpm", method="em", diffusion_width=16, learning_rate=5e-4,
                  pretrain_epochs=100, pretrain_reliance=0.0, seed=args.seed, device="cpu")
    rows = []
    for stage in args.stages:
        pre = VarClust(10, **common, diffusion_pretrain_epochs=stage, em_iterations=0)
        pre.fit(x, progress=False)
        for weight in args.weights:
            for warmup in args.warmups:
                t0 = time.perf_counter()
                vc = VarClust(10, **common, diffusion_pretrain_epochs=stage,
                              em_iterations=args.em_iterations, diffusion_weight=weight,
                              kl_warmup_iterations=warmup)
                vc.fit(x, y, progress=False, pretrained=pre)
                labels = vc.predict(x).labels
                rows.append({
                    "generator_epochs": stage, "diffusion_weight": weight, "kl_warmup": warmup,
                    "latent_reliance": vc.latent_reliance,
                    **clustering_scores(y, labels),
                    "acc_per_iteration": [h["acc"] for h in vc.history],
                    "min_weight": float(vc.model.prior.weights.detach().min()),
                    "min_cluster_share": float(np.bincount(labels, minlength=10).min() / len(y)),
                    "em_seconds": time.perf_counter() - t0,
                })
                r = rows[-1]
                print(f"generator epochs {stage:3d}, weight {weight:g}, warm-up {warmup}: "
                      f"reliance {r['latent_reliance']:.3f}, ACC {r['acc']:.3f}, NMI "
                      f"{r['nmi']:.3f}, ARI {r['ari']:.3f}, min weight {r['min_weight']:.3f}, "
                      f"min share {r['min_cluster_share']:.3f}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "machine": platform.platform(), "cpu_threads": torch.get_num_threads(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {**common, "em_iterations": args.em_iterations}, "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
