"""How well could a Gaussian mixture cluster a fit's codes? Label-informed ceilings beside the
fit's own ACC (issue 16): is ACC held back by the start, or by the codes?

    python benchmarks/codes_ceiling.py RUN [RUN ...] --dataset fashion-mnist \\
        --json benchmarks/results/codes_ceiling_fashion-mnist.json

For each run folder of ``varclust fit`` (after pretraining alone with ``--epochs 0``, or after
SVI) it encodes the data set (the means of q(z|x), ``VarClust.encode``) and scores, on the
codes (N, D):

- ``fit``: the fit's own clusters (``predict``).
- ``merged_em``: the ``merged-refined`` start's partition of these codes
  (:func:`~varclust.model.mixture_fit.refined_mixture` of ``merged_responsibilities``,
  mixture seed = the fit's seed), and the per-datum log-likelihood of that converged
  K-component full-covariance GaussianMixture.
- ``classes_em`` (**reads the labels**): the same EM started at the classes (one-hot
  responsibilities of the true labels): the best a K-Gaussian mixture fitted by maximum
  likelihood keeps of the classes, and its log-likelihood; where it is above ``merged_em``'s,
  a better search of the likelihood would find a partition nearer the classes.
- ``class_gaussians`` (**reads the labels**): each datum given to the class Gaussian (the
  classes' own weights, means and full covariances) under which it is most probable, no EM:
  scikit-learn's QuadraticDiscriminantAnalysis fitted to and predicting all the codes, each
  class variance raised by 1e-6 (``reg_param``, as GaussianMixture's ``reg_covar``): a fit from
  scratch leaves latent dimensions whose means are constant, and QDA refuses a singular class.
- ``linear_probe`` and ``knn10`` (**read the labels**): held-out accuracy (the last 10 000
  codes of a fixed permutation, or a fifth of a smaller data set) of a logistic regression and
  of a 10-nearest-neighbour classifier (scikit-learn) trained on the other codes.

The label-informed rows are diagnoses, never a start or a criterion. Prints a table and writes
JSON.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from results_json import write_results
from run_folders import run_folder_arguments
from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from varclust import VarClust, clustering_scores, load_dataset
from varclust.model.mixture_fit import merged_responsibilities, refined_mixture

HELD_OUT = 10_000  # at most; a fifth of a smaller data set


def em_from(codes: torch.Tensor, responsibilities: np.ndarray, seed: int,
            labels: np.ndarray) -> dict[str, float]:
    """ACC/NMI/ARI and per-datum log-likelihood of K-Gaussian EM started at responsibilities
    (N, K) of codes (N, D) (:func:`~varclust.model.mixture_fit.refined_mixture`)."""
    gmm = refined_mixture(codes, responsibilities, seed)
    z = codes.double().numpy()
    return {**clustering_scores(labels, gmm.predict(z)), "loglik": float(gmm.score(z))}


def main() -> None:
    args = run_folder_arguments(__doc__.split("\n\n")[0])
    data = load_dataset(args.dataset)
    labels = data.labels.numpy()
    k = len(np.unique(labels))
    rows = []
    for run in args.runs:
        start = time.perf_counter()
        vc = VarClust.load(run / "checkpoint.pt", device="cpu")
        codes = torch.from_numpy(np.asarray(vc.encode(data.images), dtype=np.float64))
        z = codes.numpy()
        seed = vc.config.seed
        order = np.random.default_rng(0).permutation(len(labels))
        held_out = min(HELD_OUT, len(labels) // 5)
        train, test = order[:-held_out], order[-held_out:]
        row = {
            "run": str(run), "seed": seed,
            "fit": clustering_scores(labels, np.asarray(vc.predict(data.images).labels)),
            "merged_em": em_from(codes, merged_responsibilities(codes, k, seed), seed, labels),
            "classes_em": em_from(codes, np.eye(k)[labels], seed, labels),
            "class_gaussians": clustering_scores(labels, QuadraticDiscriminantAnalysis(
                reg_param=1e-6, tol=1e-9).fit(z, labels).predict(z)),
            "linear_probe": float(LogisticRegression(max_iter=2000).fit(
                z[train], labels[train]).score(z[test], labels[test])),
            "knn10": float(KNeighborsClassifier(10).fit(z[train], labels[train]).score(
                z[test], labels[test])),
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        print(f"{run}: fit ACC {row['fit']['acc']:.4f}; merged EM ACC "
              f"{row['merged_em']['acc']:.4f} (loglik {row['merged_em']['loglik']:.4f}); classes "
              f"EM ACC {row['classes_em']['acc']:.4f} (loglik {row['classes_em']['loglik']:.4f});"
              f" class Gaussians {row['class_gaussians']['acc']:.4f}; linear probe "
              f"{row['linear_probe']:.4f}; 10-NN {row['knn10']:.4f}", flush=True)
    print(f"\n{'mean over ' + str(len(rows)) + ' runs':<22} {'ACC':>6} {'sd':>6}")
    summary = {}
    for name in ("fit", "merged_em", "classes_em", "class_gaussians"):
        acc = [r[name]["acc"] for r in rows]
        summary[name] = {"acc_mean": float(np.mean(acc)), "acc_sd": float(np.std(acc, ddof=1))
                         if len(acc) > 1 else float("nan")}
        print(f"{name:<22} {np.mean(acc):6.3f} {summary[name]['acc_sd']:6.3f}")
    out = args.json or Path(__file__).parent / "results" / f"codes_ceiling_{args.dataset}.json"
    write_results(out, dataset=args.dataset, rows=rows, summary=summary)


if __name__ == "__main__":
    main()
