"""How long to pretrain: clustering quality of the autoencoder's codes against pretraining epochs.

Trains the encoder mean and decoder of the default networks as an autoencoder (what
``VarClust.fit`` does before SVI) in chunks of --every epochs (Adam restarted at each chunk,
each chunk shuffled with its own seed), and after each chunk fits the library's diagonal
GaussianMixture to the codes (``n_init`` restarts) and scores its clusters against the labels:
the initialisation SVI starts from. Prints a table and writes JSON
(default benchmarks/results/pretraining_DATASET.json).

    python benchmarks/pretraining.py --dataset fashion-mnist --epochs 40 --every 5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyro
import torch
from results_json import write_results

from varclust import FitConfig, VarClust, clustering_scores, load_dataset
from varclust.inference.batching import batched_apply
from varclust.inference.init import pretrain_autoencoder
from varclust.model.mixture_fit import fit_mixture_to_codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--every", type=int, default=5, help="score the codes every E epochs")
    parser.add_argument("--network", default="mlp")
    parser.add_argument("--likelihood", default="bernoulli")
    parser.add_argument("--lr", type=float, default=1e-3, help="pretraining learning rate")
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--n-init", type=int, default=5, help="GaussianMixture restarts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    data = load_dataset(args.dataset)
    x, y = data.images, data.labels.numpy()
    vc = VarClust(config=FitConfig(num_clusters=args.clusters, network=args.network,
                                   likelihood=args.likelihood, seed=args.seed, device="cpu",
                                   precision=args.precision))
    pyro.set_rng_seed(args.seed)
    vc.build(tuple(x.shape[1:]))  # the networks a fit would pretrain
    encoder, decoder, likelihood = vc.guide.encoder, vc.model.decoder, vc.model.likelihood
    rows = []
    t0 = time.perf_counter()
    for chunk in range(args.epochs // args.every):
        losses = pretrain_autoencoder(encoder, decoder, likelihood, x, args.every, 256, args.lr,
                                      args.seed + 100 * chunk)
        with torch.no_grad():
            codes = batched_apply(lambda b: vc.guide.encode(b)[0], x)
        vc.model.prior.set_mixture(*fit_mixture_to_codes(codes, args.clusters, args.seed,
                                                         args.n_init))
        with torch.no_grad():
            labels = vc.model.prior.log_joint(codes).argmax(-1).numpy()
        rows.append({"epochs": (chunk + 1) * args.every, "loss": losses[-1],
                     "seconds": time.perf_counter() - t0, **clustering_scores(y, labels)})
        print(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in rows[-1].items()), flush=True)

    print(f"\n{args.dataset}, N={len(y)}, {args.network}, seed {args.seed}: GaussianMixture on "
          "the codes after pretraining")
    print(f"{'epochs':>6} {'loss':>9} {'ACC':>7} {'NMI':>7} {'ARI':>7} {'seconds':>8}")
    for r in rows:
        print(f"{r['epochs']:>6} {r['loss']:>9.2f} {r['acc']:>7.3f} {r['nmi']:>7.3f} "
              f"{r['ari']:>7.3f} {r['seconds']:>8.0f}")
    out = args.json or Path(__file__).parent / "results" / f"pretraining_{args.dataset}.json"
    write_results(out, dataset=args.dataset, num_data=len(y),
                  settings=vars(args) | {"json": str(out)}, rows=rows)


if __name__ == "__main__":
    main()
