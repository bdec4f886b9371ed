"""Terms added to the training objective that are NOT part of the ELBO.

They exist to make a Gaussian-mixture VAE cluster when it is trained from scratch (no
autoencoder pretraining). Everything here is optional, off by default, and recorded under its
own name in ``metrics.json``; the ``elbo`` that varclust reports never includes them.

**Cluster information** (``cluster_information`` = lambda): the mutual information between the
datum and its cluster under the guide's cluster posterior q(c | x), estimated on the mini-batch
as in IMSAT (Hu et al. 2017) and regularised information maximisation (Krause et al. 2010):

    I_q(c; x) ~= H( (1/B) sum_b q(c | x_b) ) - (1/B) sum_b H( q(c | x_b) ).

The first entropy rewards using all clusters (it is maximal, log K, for balanced clusters); the
second rewards confident assignments. The trainer maximises ELBO + lambda * N * I_q(c; x): the
factor N puts lambda on the per-datum scale of the ELBO (which is scaled to the data set).
Without it, a GMM-VAE trained from a random start puts every datum into one component: the
mixture weights follow the guide's assignments and the assignments follow the weights.
``cluster_balance`` mu weighs the two entropies apart, as public implementations of IMSAT's loss
do (mu = 4 there): the term is then lambda * N * [mu H(mean q) - mean H(q)], which for mu > 1
asks for balanced clusters more than for confident assignments, leaving confidence more to the
ELBO (whose p(c|z) sharpens as the components separate). mu = 1 (the default) is I_q(c; x).
``--recipe scratch`` sets lambda 0.5, mu 12 (BENCHMARKS.md, issue 12). mu = 0 leaves the
confidence term -lambda * N * mean H(q) alone (entropy minimisation, Grandvalet & Bengio 2005):
with ``prior="dp"`` the balance would reward spreading the data over all K components and so
fight the prior's pruning, while confidence alone pushes each code into one component and lets
the prior decide how many stay (BENCHMARKS.md, issue 17).

**Augmentation consistency** (``augmentation_consistency`` = gamma): images shifted by at most
``max_shift`` pixels should fall in the same cluster (IMSAT's self-augmentation; the shift is
what Hu et al. use for digits). The loss is gamma * N * (1/B) sum_b KL(q(c | x_b) || q(c | x'_b))
with x'_b a shifted copy of x_b and q(c | x_b) held fixed (no gradient), as a target.

**Virtual adversarial smoothing** (``virtual_adversarial`` = eta, radius ``adversarial_radius``
= epsilon): q(c | x) should not change within an L2 ball of radius epsilon around each datum,
tested in the direction where it changes most (virtual adversarial training, Miyato et al. 2018;
IMSAT's regulariser, which it pairs with the cluster information above). The direction comes
from one power iteration: with d_b a random unit vector and D_b(r) = KL(q(c | x_b) || q(c | x_b
+ r)) (q(c | x_b) held fixed), r_b = epsilon * g_b / ||g_b|| where g_b = grad_r D_b at r =
epsilon d_b; the loss is eta * N * (1/B) sum_b D_b(r_b). Unlike the shift it needs no image
structure, so it applies to flat data too. IMSAT sets each datum's epsilon_b to alpha = 0.25
times its distance to its 10th nearest neighbour in the data set, sigma_10(x_b): with
``adversarial_radius_scale`` = alpha > 0 varclust does so too (the neighbours found once, before
training, as the neighbour term below finds them; the distances measured on the data), so that
the ball is small where the data are dense and large where they are sparse; with alpha = 0 every
datum has the fixed radius ``adversarial_radius``. On the UCI digits (pixels in [0, 1]) sigma_10
is 1.45 on average, on Fashion-MNIST 4.2 (a quarter: 0.36 and 1.06).

**Neighbour consistency** (``neighbour_consistency`` = nu, ``neighbours`` = k): a datum and one
of its k nearest neighbours in the data set should fall in the same cluster (the neighbour term
of SCAN, Van Gansbeke et al. 2020, written as the KL above: x'_b is a neighbour of x_b drawn
uniformly from its k, a fresh draw at every step). The neighbours are found once, before
training, among all N data by Euclidean distance on the flattened data, projected on their first
50 principal components when they have more dimensions (scikit-learn's ``PCA`` and
``NearestNeighbors``). On the UCI digits 97.9 % of the 5 nearest neighbours share the datum's
digit (an unsupervised fact about the data, the labels only measure it), so the term ties
together what a pixel-space neighbourhood already groups and lets the ELBO and the cluster
information decide the rest. Like the other consistency terms it is the loss nu * N * (1/B)
sum_b KL(q(c | x_b) || q(c | x'_b)) with q(c | x_b) held fixed.

**UMAP's graph of the pretrained codes** (``umap_graph`` = w): the codes keep the
neighbourhoods that UMAP's fuzzy graph finds among the codes at the start of SVI (N2D's
structure, held through training rather than read off once); :mod:`.umap_graph` derives it.

**The consensus of earlier fits** (``consensus_targets`` = w, with ``consensus_file``): w N
mean_b KL(t_b || q(c | x_b)), t the matched average of several fits' q(c | x);
:mod:`.consensus` derives it (``--restarts R --consensus W`` sets it).

**Warming the terms up with the KL** (``warm_up_terms``): with a KL warm-up of weight beta_e in
epoch e (:mod:`.kl_warmup`) the trainer maximises

    E_q[log p(x | z)] - beta_e KL(q(z, c | x) || p(z, c)) + w_e * (the terms above),

with w_e = 1 by default and w_e = beta_e with ``warm_up_terms``, which keeps the ratio of the
cluster terms to the KL fixed while the codes form. Without it, a from-scratch fit's cluster
head is pushed at full strength towards a confident, balanced partition of the untrained
encoder's features from the first step, and the encoder then keeps that partition. Measured on
the digits (BENCHMARKS.md, issue 12): it changes which seeds end well, not how many (10 seeds,
ACC 0.782 +- 0.071 against 0.784 +- 0.071), so no recipe sets it.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors
from torch import Tensor, nn

from .consensus import ConsensusTargets
from .objective_term import TermOutsideELBO
from .umap_graph import UMAPGraphTerm

__all__ = [
    "AugmentationConsistency",
    "ClusterInformation",
    "ConsistencyTerm",
    "NeighbourConsistency",
    "TERMS_OUTSIDE_ELBO",
    "VirtualAdversarialSmoothing",
    "cluster_entropies",
    "cluster_information",
    "nearest_neighbours",
    "neighbour_distances",
    "random_shift",
    "regularisers_of",
    "terms_outside_elbo",
    "unit_norm",
]

def terms_outside_elbo(config) -> list[str]:
    """The names of the terms outside the ELBO that a :class:`~varclust.config.FitConfig`
    turns on (a weight > 0), as ``metrics.json`` lists them; each is named after its field."""
    return [term.name for term in TERMS_OUTSIDE_ELBO if getattr(config, term.name)]


def regularisers_of(config, data: Tensor | None = None) -> list[TermOutsideELBO]:
    """The terms outside the ELBO that a :class:`~varclust.config.FitConfig` turns on, for a
    fit to ``data`` (N, ...), which the neighbour and UMAP terms need (their edges join data);
    each term builds itself (``from_config``)."""
    return [term.from_config(config, data) for term in TERMS_OUTSIDE_ELBO
            if getattr(config, term.name)]


def random_shift(x: Tensor, max_shift: int) -> Tensor:
    """Each image of x (B, C, H, W) moved by its own (dy, dx) in [-max_shift, max_shift]^2,
    zero-filled at the edges (the background of the data sets varclust fits)."""
    b, _, h, w = x.shape
    pad = torch.nn.functional.pad(x, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return pad[batch, channels, rows, cols]


def kl_categorical(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) per row of normalised log-probabilities (B, K) -> (B,)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def cluster_entropies(log_q: Tensor) -> tuple[Tensor, Tensor]:
    """The two entropies of a batch of cluster posteriors log_q (B, K), normalised, in nats:
    H(mean_b q_b) (balance of the clusters) and mean_b H(q_b) (uncertainty of the assignments),
    each a 0-dim tensor."""
    q = log_q.exp()
    mean_q = q.mean(0)
    marginal_entropy = -(mean_q * mean_q.clamp_min(1e-30).log()).sum()
    conditional_entropy = -(q * log_q).sum(-1).mean()
    return marginal_entropy, conditional_entropy


def cluster_information(log_q: Tensor) -> Tensor:
    """I_q(c; x) of a batch of cluster posteriors: log_q (B, K), normalised -> 0-dim tensor,
    H(mean_b q_b) - mean_b H(q_b), in nats; between 0 and log K."""
    marginal_entropy, conditional_entropy = cluster_entropies(log_q)
    return marginal_entropy - conditional_entropy


class ClusterInformation(TermOutsideELBO):
    """The loss term -weight * N * [mu H(mean q) - mean H(q)] on a mini-batch (module
    docstring; mu = 1: -weight * N * I_q(c; x)).

    Args:
        weight: lambda > 0.
        balance: mu >= 0, the weight of the marginal entropy (IMSAT's mu; 0: the confidence
            term -weight * N * mean H(q) alone).
    """

    name = "cluster_information"

    def __init__(self, weight: float, balance: float = 1.0) -> None:
        if not weight > 0:
            raise ValueError(f"the cluster information weight must be positive, got {weight}")
        if not balance >= 0:
            raise ValueError(f"the cluster balance mu must be >= 0, got {balance}")
        self.weight = weight
        self.balance = balance

    @classmethod
    def from_config(cls, config, data: Tensor | None) -> ClusterInformation:
        return cls(config.cluster_information, config.cluster_balance)

    def loss(self, guide: nn.Module, prior: nn.Module, x: Tensor, indices: Tensor,
             num_data: int, log_q: Tensor) -> Tensor:
        """-weight * num_data * [mu H(mean q) - mean H(q)] (mu = 1: I_q(c; x)) for the
        mini-batch x (B, ...), the data at ``indices`` (B,), whose log q(c | x) is ``log_q``
        (B, K): a 0-dim tensor that carries gradient to the guide's cluster posterior (and the
        prior, where q uses it)."""
        marginal_entropy, conditional_entropy = cluster_entropies(log_q)
        return -self.weight * num_data * (self.balance * marginal_entropy - conditional_entropy)


class ConsistencyTerm(TermOutsideELBO):
    """The loss term weight * N * mean_b KL(q(c | x_b) || q(c | x'_b)): q(c | x_b), held fixed,
    is the target for a moved copy x'_b of the datum, which each subclass makes (:meth:`move`).

    Args:
        weight: the term's weight (gamma, eta) > 0.
    """

    def __init__(self, weight: float) -> None:
        if not weight > 0:
            raise ValueError(f"the {self.name} weight must be positive, got {weight}")
        self.weight = weight

    @classmethod
    def from_config(cls, config, data: Tensor | None) -> ConsistencyTerm:
        """The term with a FitConfig's settings, for a fit to ``data`` (N, ...)."""
        raise NotImplementedError

    def move(self, guide: nn.Module, prior: nn.Module, x: Tensor, indices: Tensor,
             target: Tensor) -> Tensor:
        """x' (same shape as the batch x, the data at ``indices`` (B,)), given the target
        log q(c | x) (B, K)."""
        raise NotImplementedError

    def loss(self, guide: nn.Module, prior: nn.Module, x: Tensor, indices: Tensor,
             num_data: int, log_q: Tensor) -> Tensor:
        """As :meth:`ClusterInformation.loss`; ``log_q`` (B, K), detached, is the target."""
        target = log_q.detach()
        moved = guide.cluster_logits(self.move(guide, prior, x, indices, target), prior)
        return self.weight * num_data * kl_categorical(target, moved).mean()


class AugmentationConsistency(ConsistencyTerm):
    """x' = x shifted by at most ``max_shift`` pixels (module docstring), for image batches
    (B, C, H, W).

    Args:
        weight: gamma > 0.
        max_shift: the largest shift in pixels, >= 1.
    """

    name = "augmentation_consistency"

    def __init__(self, weight: float, max_shift: int = 1) -> None:
        super().__init__(weight)
        self.max_shift = max_shift

    @classmethod
    def from_config(cls, config, data: Tensor | None) -> AugmentationConsistency:
        return cls(config.augmentation_consistency)

    def move(self, guide: nn.Module, prior: nn.Module, x: Tensor, indices: Tensor,
             target: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(
                "augmentation_consistency shifts images and needs data of shape (N, C, H, W), "
                f"got a batch of shape {tuple(x.shape)}; set augmentation_consistency=0")
        return random_shift(x, self.max_shift)


def unit_norm(v: Tensor) -> Tensor:
    """v (B, ...) scaled to unit L2 norm per datum."""
    norm = v.flatten(1).norm(dim=1).clamp_min(1e-12)
    return v / norm.view(-1, *([1] * (v.dim() - 1)))


class VirtualAdversarialSmoothing(ConsistencyTerm):
    """x' = x + r, r the virtual adversarial perturbation found by one power iteration (module
    docstring), of L2 norm ``radius`` for every datum or, given ``radii``, of each datum's own
    radius (IMSAT's rule, :func:`neighbour_distances`). Any data shape: the norm is taken over
    all of a datum's entries.

    Args:
        weight: eta > 0.
        radius: epsilon > 0, in the data's units (used when ``radii`` is None).
        radii: (N,) each datum's radius, indexed by the batch's ``indices``; None: ``radius``.
    """

    name = "virtual_adversarial"

    def __init__(self, weight: float, radius: float, radii: Tensor | None = None) -> None:
        super().__init__(weight)
        if not radius > 0:
            raise ValueError(f"the adversarial radius must be positive, got {radius}")
        if radii is not None and not bool((radii > 0).all()):
            raise ValueError("every datum's adversarial radius must be positive; a datum with "
                             "ten or more exact copies in the data has radius 0: drop the "
                             "duplicates or use a fixed adversarial_radius "
                             "(adversarial_radius_scale=0)")
        self.radius = radius
        self.radii = radii

    @classmethod
    def from_config(cls, config, data: Tensor | None) -> VirtualAdversarialSmoothing:
        """The term with a FitConfig's settings; ``adversarial_radius_scale`` > 0 computes each
        datum's radius from ``data`` (N, ...), once."""
        if not config.adversarial_radius_scale:
            return cls(config.virtual_adversarial, config.adversarial_radius)
        if data is None:
            raise ValueError("adversarial_radius_scale measures each datum's distance to its "
                             "neighbours in the data set: build the term with the data "
                             "(regularisers_of(config, data))")
        radii = config.adversarial_radius_scale * neighbour_distances(data, 10)
        return cls(config.virtual_adversarial, config.adversarial_radius, radii)

    def radius_of(self, x: Tensor, indices: Tensor) -> Tensor | float:
        """The radius of each datum of the batch x (B, ...) at ``indices`` (B,): a float, or
        (B, 1, ...) to broadcast against x."""
        if self.radii is None:
            return self.radius
        return self.radii[indices].to(x.device).view(-1, *([1] * (x.dim() - 1)))

    def perturbation(self, guide: nn.Module, prior: nn.Module, x: Tensor,
                     target: Tensor, radius: Tensor | float | None = None) -> Tensor:
        """r (same shape as x), each datum's of norm ``radius`` (a float or (B, 1, ...); None:
        the fixed radius): one power-iteration step from a random direction towards the
        largest increase of KL(target || q(c | x + r))."""
        radius = self.radius if radius is None else radius
        probe = (radius * unit_norm(torch.randn_like(x))).requires_grad_(True)
        divergence = kl_categorical(target, guide.cluster_logits(x + probe, prior)).sum()
        (gradient,) = torch.autograd.grad(divergence, probe)
        return radius * unit_norm(gradient.detach())

    def move(self, guide: nn.Module, prior: nn.Module, x: Tensor, indices: Tensor,
             target: Tensor) -> Tensor:
        return x + self.perturbation(guide, prior, x, target, self.radius_of(x, indices))


def neighbour_distances(data: Tensor, t: int) -> Tensor:
    """Each datum's Euclidean distance, on the flattened data, to its t-th nearest neighbour
    among the others (IMSAT's sigma_t): (N,), on the data's device. The neighbour is the t-th
    of :func:`nearest_neighbours` (found after a projection on 50 principal components for
    more dimensions); the distance is measured on the data themselves."""
    neighbour = nearest_neighbours(data, t)[:, t - 1]
    flat = data.detach().reshape(len(data), -1)
    return (flat - flat[neighbour]).norm(dim=1)


def nearest_neighbours(data: Tensor, k: int, components: int = 50) -> Tensor:
    """The k nearest neighbours of each datum of ``data`` (N, ...) among the others: indices
    (N, k) (long, on the data's device), nearest first, by Euclidean distance on the flattened
    data, after a projection on their first ``components`` principal components when they have
    more dimensions. Deterministic (exact search, PCA by full SVD)."""
    n = len(data)
    if not 1 <= k < n:
        raise ValueError(f"neighbours must be between 1 and N - 1 = {n - 1}, got {k}")
    flat = data.detach().reshape(n, -1).double().cpu().numpy()
    if flat.shape[1] > components:
        flat = PCA(min(components, n), svd_solver="full").fit_transform(flat)
    _, found = NearestNeighbors(n_neighbors=k + 1).fit(flat).kneighbors(flat)
    # drop each datum itself (the first column unless an exact duplicate came first)
    own = found == np.arange(n)[:, None]
    keep = np.where(own.any(1, keepdims=True), ~own, np.arange(k + 1) < k)
    others = found[keep].reshape(n, k)
    return torch.as_tensor(others, dtype=torch.long, device=data.device)


class NeighbourConsistency(ConsistencyTerm):
    """x' = a neighbour of x drawn uniformly from its ``neighbours`` nearest in ``data``
    (module docstring; :func:`nearest_neighbours` finds them once, here).

    Args:
        weight: nu > 0.
        data: the data set (N, ...) the batches index.
        neighbours: k >= 1.
    """

    name = "neighbour_consistency"

    def __init__(self, weight: float, data: Tensor | None, neighbours: int = 5) -> None:
        super().__init__(weight)
        if data is None:
            raise ValueError("neighbour_consistency finds each datum's neighbours in the data "
                             "set: build it with the data (regularisers_of(config, data))")
        self.data = data
        self.table = nearest_neighbours(data, neighbours)

    @classmethod
    def from_config(cls, config, data: Tensor | None) -> NeighbourConsistency:
        return cls(config.neighbour_consistency, data, config.neighbours)

    def move(self, guide: nn.Module, prior: nn.Module, x: Tensor, indices: Tensor,
             target: Tensor) -> Tensor:
        pick = torch.randint(self.table.shape[1], (len(indices),), device=indices.device)
        return self.data[self.table[indices, pick]]


#: the terms outside the ELBO, each named after the FitConfig field of its weight, in the
#: order they are added to the loss
TERMS_OUTSIDE_ELBO = (ClusterInformation, AugmentationConsistency, VirtualAdversarialSmoothing,
                      NeighbourConsistency, UMAPGraphTerm, ConsensusTargets)
