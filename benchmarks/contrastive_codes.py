"""Would augmentation-invariant codes cluster better? SimCLR codes of an MLP against the
autoencoder's (issue 16's exploration; not the library's code path).

Issue 16 closed its exploration with "passing 0.70 needs another representation
(augmentation-invariant or contrastive features)". This script measures that claim on the
CPU's budget: an MLP encoder of the library's shape (P-h1-h2-h3-D, default the narrow
256-256-1024, D = 10) is trained with SimCLR's NT-Xent loss (Chen et al. 2020) on two random
views of each image: a crop of 75 to 100 % of the side resized back (a zoom in), a horizontal
flip with probability 1/2 and a shift of up to 15 % of the side in each direction, drawn per
image and applied by ``affine_grid``/``grid_sample``. The loss acts on a projection head
D-256-64 above the code; with ``--recon-weight w`` the Bernoulli reconstruction of the clean
image from its code (mean binary cross-entropy a pixel, times w) is added. Every ``--every``
epochs scikit-learn's GaussianMixture (diagonal and full covariances, 3 initialisations) is
fitted to the codes and to the codes scaled to unit length, and scored against the labels
(the labels score only).

    python benchmarks/contrastive_codes.py --dataset fashion-mnist --epochs 20 --seed 0 \
        --temperature 0.5 --recon-weight 0

Prints a table and writes JSON (default benchmarks/results/contrastive_codes_DATASET.json).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from results_json import write_results
from sklearn.mixture import GaussianMixture
from torch import Tensor

from varclust import clustering_scores, load_dataset
from varclust.inference.batching import batched_apply
from varclust.model.decoders import mlp


def random_views(x: Tensor) -> Tensor:
    """One random view of each image of x (B, C, H, W): zoom in, flip, shift (per image)."""
    b = x.shape[0]
    zoom = torch.empty(b).uniform_(0.75, 1.0)
    flip = torch.where(torch.rand(b) < 0.5, -1.0, 1.0)
    shift_x, shift_y = torch.empty(b).uniform_(-0.15, 0.15), torch.empty(b).uniform_(-0.15, 0.15)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = zoom * flip, zoom
    theta[:, 0, 2], theta[:, 1, 2] = shift_x, shift_y
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def nt_xent(h1: Tensor, h2: Tensor, temperature: float) -> Tensor:
    """SimCLR's loss of two views' projections h1, h2 (B, P): each view's partner is its
    positive, the other 2B - 2 views its negatives, cosine similarity over ``temperature``."""
    z = F.normalize(torch.cat([h1, h2]), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(-1e9)
    b = h1.shape[0]
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)])
    return F.cross_entropy(similarity, partner)


def score_codes(codes: np.ndarray, labels: np.ndarray, clusters: int, seed: int) -> dict:
    """ACC/NMI/ARI of GaussianMixtures (diag, full) on the codes and on unit-length codes."""
    scores = {}
    unit = codes / np.linalg.norm(codes, axis=1, keepdims=True)
    for name, z in (("codes", codes), ("unit", unit)):
        for covariance in ("diag", "full"):
            mixture = GaussianMixture(clusters, covariance_type=covariance, n_init=3,
                                      random_state=seed).fit(z)
            scores[f"{name}_{covariance}"] = clustering_scores(labels, mixture.predict(z))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--every", type=int, default=5, help="score the codes every E epochs")
    parser.add_argument("--hidden", default="256,256,1024")
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.5, help="NT-Xent temperature")
    parser.add_argument("--recon-weight", type=float, default=0.0,
                        help="weight of the clean image's reconstruction (0: SimCLR alone)")
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    data = load_dataset(args.dataset)
    x, y = data.images, data.labels.numpy()
    n, pixels = len(x), int(np.prod(x.shape[1:]))
    hidden = [int(h) for h in args.hidden.split(",")]
    encoder = mlp([pixels, *hidden, args.latent_dim])
    head = mlp([args.latent_dim, 256, 64])
    decoder = mlp([args.latent_dim, *hidden[::-1], pixels])
    params = [*encoder.parameters(), *head.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)

    rows = []
    t0 = time.perf_counter()
    b = args.batch_size
    for epoch in range(1, args.epochs + 1):
        order, total = torch.randperm(n), 0.0
        for i in range(0, n - b + 1, b):
            batch = x[order[i:i + b]]
            z1 = encoder(random_views(batch).flatten(1))
            z2 = encoder(random_views(batch).flatten(1))
            loss = nt_xent(head(z1), head(z2), args.temperature)
            if args.recon_weight > 0:
                logits = decoder(encoder(batch.flatten(1)))
                loss = loss + args.recon_weight * F.binary_cross_entropy_with_logits(
                    logits, batch.flatten(1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        seconds, mean_loss = time.perf_counter() - t0, total / (n // b)
        print(f"epoch {epoch}: loss {mean_loss:.4f}, {seconds:.0f} s", flush=True)
        if epoch % args.every == 0 or epoch == args.epochs:
            with torch.no_grad():
                codes = batched_apply(lambda chunk: encoder(chunk.flatten(1)), x, 4096).numpy()
            rows.append({"epochs": epoch, "loss": mean_loss, "train_seconds": seconds,
                         **score_codes(codes, y, args.clusters, args.seed)})
            print({k: (round(v["acc"], 3), round(v["nmi"], 3)) for k, v in rows[-1].items()
                   if isinstance(v, dict)}, flush=True)

    print(f"\n{args.dataset}, N={n}, SimCLR codes (T {args.temperature}, reconstruction weight "
          f"{args.recon_weight}), seed {args.seed}: ACC / NMI of GaussianMixtures on the codes")
    kinds = ("codes_diag", "codes_full", "unit_diag", "unit_full")
    print(f"{'epochs':>6} " + " ".join(f"{k:>13}" for k in kinds))
    for r in rows:
        print(f"{r['epochs']:>6} " + " ".join(
            f"{r[k]['acc']:>6.3f}/{r[k]['nmi']:.3f}" for k in kinds))
    out = args.json or Path(__file__).parent / "results" / f"contrastive_codes_{args.dataset}.json"
    write_results(out, dataset=args.dataset, num_data=n,
                  settings=vars(args) | {"json": str(out)}, rows=rows)


if __name__ == "__main__":
    main()
