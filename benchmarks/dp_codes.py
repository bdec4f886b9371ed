"""How many clusters the pretrained codes support: scikit-learn's Dirichlet-process mixture on them.

    python benchmarks/dp_codes.py --dataset digits --seeds 3

For each seed, pretrains the autoencoder as ``varclust fit`` does (the data set's defaults,
no SVI epochs), encodes the data, and fits scikit-learn's ``BayesianGaussianMixture``
(``weight_concentration_prior_type="dirichlet_process"``, diagonal covariances, truncation
--truncation) to the codes under a grid of priors: the concentration alpha, and the strength
of the prior on the component variances (``degrees_of_freedom_prior`` = D x dof,
``covariance_prior`` = the codes' variance x cov). Prints, per setting, the components holding
>= 1 % of the data and the NMI of the assignments, beside a K = 10 GaussianMixture on the same
codes; writes JSON. This is the reference ``prior="dp"`` is checked against
(``tests/test_dp_prior.py``): what it shows is what the codes allow, before any joint training.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.metrics import normalized_mutual_info_score
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from varclust import FitConfig, VarClust, load_dataset
from varclust.cli import DATASET_DEFAULTS

RESULTS = Path(__file__).parent / "results"


def in_use(assigned: np.ndarray, k: int) -> int:
    """Components holding at least 1 % of the data."""
    return int((np.bincount(assigned, minlength=k) >= 0.01 * len(assigned)).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--truncation", type=int, default=30)
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0, 0.01])
    parser.add_argument("--dofs", type=float, nargs="+", default=[1, 3, 5, 10])
    parser.add_argument("--covs", type=float, nargs="+", default=[1, 3])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    data = load_dataset(args.dataset)
    y = data.labels.numpy()
    defaults = {**DATASET_DEFAULTS.get(args.dataset, {}), "epochs": 0}
    rows = []
    for seed in range(args.seeds):
        config = FitConfig(device="cpu", seed=seed, **defaults)
        codes = VarClust(config=config).fit(data.images, progress=False).encode(data.images)
        latent_dim, variance = codes.shape[1], codes.var(0)
        gmm = GaussianMixture(10, covariance_type="diag", random_state=seed).fit_predict(codes)
        print(f"seed {seed}: GaussianMixture K=10 NMI {normalized_mutual_info_score(y, gmm):.3f}",
              flush=True)
        rows.append({"seed": seed, "prior": "GaussianMixture K=10",
                     "nmi": normalized_mutual_info_score(y, gmm), "in_use": in_use(gmm, 10)})
        for alpha, dof, cov in itertools.product(args.alphas, args.dofs, args.covs):
            assigned = BayesianGaussianMixture(
                n_components=args.truncation, covariance_type="diag",
                weight_concentration_prior_type="dirichlet_process",
                weight_concentration_prior=alpha, degrees_of_freedom_prior=latent_dim * dof,
                covariance_prior=variance * cov, max_iter=500, random_state=seed,
            ).fit(codes).predict(codes)
            row = {"seed": seed, "alpha": alpha, "dof": dof, "cov": cov,
                   "in_use": in_use(assigned, args.truncation),
                   "nmi": normalized_mutual_info_score(y, assigned)}
            rows.append(row)
            print(f"  alpha {alpha:g} dof {dof:g}xD cov {cov:g}xvar: {row['in_use']:2d} in use, "
                  f"NMI {row['nmi']:.3f}", flush=True)
    out = args.json or RESULTS / f"dp_codes_{args.dataset}.json"
    out.write_text(json.dumps({
        "dataset": args.dataset, "truncation": args.truncation, "config": defaults,
        "machine": platform.platform(), "load_average": list(os.getloadavg()),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": rows,
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
