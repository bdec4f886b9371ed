"""UMAP's graph of the codes, built once and kept through training: a term outside the ELBO.

**What it adds** (``umap_graph`` = w, ``umap_neighbours`` = k). When SVI starts (after
pretraining or a warm start), or as SVI epoch ``umap_graph_epoch`` starts (a fit from scratch:
the codes it has learnt by then), umap-learn's fuzzy simplicial set of the codes (the means of
q(z | x) of all N data) is built once: the symmetric graph of the k nearest neighbours with a
membership strength v_ij in (0, 1] on each edge (McInnes, Healy & Melville 2018). UMAP lays
out an embedding y by minimising the cross-entropy of the two fuzzy sets,

    C(y) = sum_{i != j} v_ij log(v_ij / w_ij) + (1 - v_ij) log((1 - v_ij) / (1 - w_ij)),
    w_ij = 1 / (1 + a ||y_i - y_j||^{2b}),

where a, b come from ``min_dist`` (0 here, as N2D clusters UMAP embeddings: a = 1.933, b = 0.790,
umap-learn's ``find_ab_params(1, 0)``). Here y is the code itself, y_i = E_q[z | x_i], so the term
keeps the neighbourhoods of the pretrained codes while the ELBO moves the encoder (Parametric
UMAP, Sainburg, McInnes & Gentner 2021, with an autoencoder's reconstruction; here with the whole
ELBO). Up to terms free of y, C is estimated as UMAP's SGD does: E edges (i, j) drawn with
probability v_ij / sum v (the attractive part, -log w_ij, label 1) and, per edge, M = 5 negative
pairs (i, j') with j' the tail of another drawn edge (the repulsive part, -log(1 - w_ij'),
label 0). With u = a d^{2b}, -log w = log(1 + u) = softplus(log u) and -log(1 - w) =
log(1 + 1/u) = softplus(-log u). The loss on a step is

    w N (1 / (E (1 + M))) [ sum_edges softplus(log u_ij) + sum_negatives softplus(-log u_ij') ],

the mean cross-entropy of the E (1 + M) pairs, times N to put w on the per-datum scale of the
ELBO (which is scaled to the data set), as for the other terms outside the ELBO
(:mod:`.regularisers`).
E is the batch size. The term is not part of the ELBO: ``metrics.json`` lists it under
``objective_terms_outside_elbo``, and the reported ``elbo`` never includes it.

**Cost and resume.** Each step encodes the 2E endpoints of its edges (about twice the SVI
epoch's time for the MLP networks). The graph is built from the codes' exact nearest
neighbours (scikit-learn), so it is deterministic; the checkpoint keeps the codes it was built
from, and a resumed fit rebuilds the same graph from them.

BENCHMARKS.md (issue 16) has what it does to Fashion-MNIST: NMI up, ACC not.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.neighbors import NearestNeighbors
from torch import Tensor, nn

from ..modes import evaluating
from ..optional_umap import import_umap
from .objective_term import TermOutsideELBO
from .prediction import encode_means

__all__ = ["UMAPGraphTerm", "fuzzy_graph", "umap_pair_losses"]

#: umap-learn's find_ab_params(spread=1, min_dist=0): w = 1 / (1 + a d^(2b))
CURVE_A, CURVE_B = 1.9328083980052901, 0.7904949736958765
#: negative pairs per edge (umap-learn's negative_sample_rate)
NEGATIVE_SAMPLES = 5


def fuzzy_graph(codes: Tensor, neighbours: int) -> tuple[Tensor, Tensor, Tensor]:
    """umap-learn's fuzzy simplicial set of ``codes`` (N, D): the edges' heads (E,) and tails
    (E,) (long) and membership strengths (E,) (float64), each direction of an edge listed, on
    the codes' device."""
    umap = import_umap("umap_graph", "set umap_graph=0")
    z = codes.detach().cpu().float().numpy()
    if len(z) <= neighbours:
        raise ValueError(f"umap_graph needs more than umap_neighbours={neighbours} data, got "
                         f"{len(z)}; lower umap_neighbours or set umap_graph=0")
    # exact neighbours (each datum its own first, as umap-learn counts them): deterministic,
    # without compiling pynndescent (a minute of numba); brute force: 14 s for 70 000 codes in
    # 10 dimensions on 2 cores, where the k-d tree took 124 s
    search = NearestNeighbors(n_neighbors=neighbours, algorithm="brute").fit(z)
    distances, indices = search.kneighbors(z)
    # with the neighbours given, umap-learn draws nothing: its random_state is unused
    graph, _, _ = umap.umap_.fuzzy_simplicial_set(
        z, neighbours, None, "euclidean", knn_indices=indices,
        knn_dists=distances.astype(np.float32))
    graph = graph.tocoo()
    keep = graph.data > 0
    as_tensor = lambda a, dtype: torch.as_tensor(a[keep], dtype=dtype, device=codes.device)  # noqa: E731
    return (as_tensor(graph.row, torch.long), as_tensor(graph.col, torch.long),
            as_tensor(graph.data, torch.float64))


def umap_pair_losses(heads: Tensor, tails: Tensor, attract: bool) -> Tensor:
    """UMAP's cross-entropy of each pair of codes heads (P, D), tails (P, D) at min_dist 0:
    -log w (``attract``, an edge) or -log(1 - w) (a negative pair), w = 1 / (1 + a d^{2b}):
    (P,)."""
    squared = (heads - tails).pow(2).sum(-1).clamp_min(1e-10)
    log_u = math.log(CURVE_A) + CURVE_B * squared.log()
    return F.softplus(log_u if attract else -log_u)


class UMAPGraphTerm(TermOutsideELBO):
    """The loss term w N (mean UMAP cross-entropy of a step's edges and negative pairs) of the
    codes on the fuzzy graph of the codes at the start of training (module docstring).

    Args:
        weight: w > 0.
        data: the data set (N, ...) the batches index; the edges' endpoints are taken from it.
        neighbours: k >= 2, the graph's nearest neighbours.
        start_epoch: the SVI epoch at whose start the graph is built (``umap_graph_epoch``);
            the term acts from then on.
    """

    name = "umap_graph"
    needs_cluster_posterior = False

    def __init__(self, weight: float, data: Tensor | None, neighbours: int = 20,
                 start_epoch: int = 0) -> None:
        if not weight > 0:
            raise ValueError(f"the umap_graph weight must be positive, got {weight}")
        if data is None:
            raise ValueError("umap_graph takes its edges' endpoints from the data set: build it "
                             "with the data (regularisers_of(config, data))")
        self.weight, self.data, self.neighbours = weight, data, neighbours
        self.start_epoch = start_epoch
        self.codes: Tensor | None = None  # the codes the graph was built from (N, D)

    @classmethod
    def from_config(cls, config, data: Tensor | None) -> UMAPGraphTerm:
        return cls(config.umap_graph, data, config.umap_neighbours, config.umap_graph_epoch)

    @property
    def started(self) -> bool:
        return self.codes is not None

    def start(self, guide: nn.Module, data: Tensor) -> None:
        """Build the graph of the guide's codes of ``data`` (N, ...)."""
        with torch.no_grad(), evaluating(guide):
            self.build(encode_means(guide, data).float())

    def build(self, codes: Tensor) -> None:
        """The graph of ``codes`` (N, D), as :func:`fuzzy_graph` builds it."""
        self.use_graph(codes, *fuzzy_graph(codes, self.neighbours))

    def use_graph(self, codes: Tensor, heads: Tensor, tails: Tensor, strengths: Tensor) -> None:
        """Take the graph of edges heads (E,) -> tails (E,) with strengths (E,) > 0, built from
        ``codes`` (N, D) (what a checkpoint keeps to build it again)."""
        self.codes, self.heads, self.tails = codes, heads, tails
        self.cumulative = strengths.double().cumsum(0)

    def draw_edges(self, count: int) -> tuple[Tensor, Tensor]:
        """``count`` edges drawn with replacement in proportion to their strength: heads and
        tails (count,), indices into the data."""
        total = self.cumulative[-1]
        u = torch.rand(count, dtype=torch.float64, device=self.cumulative.device) * total
        picked = torch.searchsorted(self.cumulative, u, right=True).clamp_max(len(self.heads) - 1)
        return self.heads[picked], self.tails[picked]

    def loss(self, guide: nn.Module, prior: nn.Module, x: Tensor, indices: Tensor,
             num_data: int, log_q: Tensor | None) -> Tensor:
        """w N times the mean cross-entropy of len(indices) edges drawn from the graph and
        their NEGATIVE_SAMPLES negative pairs each, on the guide's codes of their endpoints:
        a 0-dim tensor carrying gradient to the encoder (the batch x itself is not used)."""
        if self.codes is None:
            raise RuntimeError("the umap_graph term has no graph: call start(guide, data) "
                               "before the first step (the fit loop does)")
        count = len(indices)
        heads, tails = self.draw_edges(count)
        codes = guide.encode(self.data[torch.cat([heads, tails])])[0].float()
        head_codes, tail_codes = codes[:count], codes[count:]
        others = torch.randint(count, (count * NEGATIVE_SAMPLES,), device=codes.device)
        attraction = umap_pair_losses(head_codes, tail_codes, attract=True)
        repulsion = umap_pair_losses(head_codes.repeat(NEGATIVE_SAMPLES, 1), tail_codes[others],
                                     attract=False)
        pairs = count * (1 + NEGATIVE_SAMPLES)
        return self.weight * num_data * (attraction.sum() + repulsion.sum()) / pairs

    def state_dict(self) -> dict:
        if self.codes is None:
            return {}
        return {"codes": self.codes.cpu()}

    def load_state_dict(self, state: dict) -> None:
        if "codes" in state:
            self.build(state["codes"].to(self.data.device))
