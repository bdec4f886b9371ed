"""A diagonal Gaussian mixture fitted to codes (scikit-learn), and its components matched to
labels: how the clusters of a fit start, and the clusters of the standard-normal prior.

Five starts (``FitConfig.mixture_start``, :data:`MIXTURE_STARTS`):

- ``codes``: a diagonal GaussianMixture on the codes themselves (:func:`fit_mixture_to_codes`).
- ``umap``: N2D's start (McConville et al., 2020, "N2D: (Not Too) Deep Clustering via
  Clustering the Local Manifold of an Autoencoded Embedding"): UMAP (McInnes et al., 2018;
  umap-learn) embeds the codes in K dimensions from their 20 nearest neighbours, a
  full-covariance GaussianMixture clusters the embedding, and its responsibilities r (N, K)
  weigh the codes into a diagonal mixture in the codes' own space (weights mean_n r_nk, means
  and variances the r-weighted moments): :func:`fit_mixture_through_umap`. The embedding only
  chooses the partition the fit starts from; the model and its ELBO are unchanged.
- ``merged``: over-clustering, then merging (the components of a mixture grouped into clusters,
  as in Hennig, 2010, "Methods for merging Gaussian mixture components"; spectral clustering of
  many representatives, as in Yan, Huang & Jordan, 2009, "Fast approximate spectral
  clustering"): a full-covariance GaussianMixture with M = :data:`MERGED_COMPONENTS_PER_CLUSTER`
  x K components on the codes; its components are grouped into K clusters by spectral
  clustering of their posterior overlap, a cluster's responsibility is the sum of its
  components', and those weigh the codes into a diagonal mixture:
  :func:`fit_mixture_through_merged_components`. A cluster can then be a curved or elongated
  union of Gaussians where one Gaussian per cluster would cut it; as with ``umap``, only the
  partition the fit starts from changes.
- ``merged-refined``: the ``merged`` partition refined by EM: a full-covariance
  GaussianMixture with K components started at the merged clusters' weighted moments and
  iterated to convergence; its responsibilities weigh the codes into the diagonal mixture:
  :func:`fit_mixture_through_refined_merge`. The EM moves the partition towards a
  higher-likelihood one of K Gaussians, which is what the prior fits next anyway; it undoes
  what the merge mends where clusters are far from Gaussian (two half-moons: the tests).
- ``split-merge``: the ``merged-refined`` mixture searched further by split-and-merge EM
  (Ueda et al., 2000; :mod:`varclust.model.split_merge_em`): merge two components, split a
  third, run EM, keep the move if the likelihood rises. EM stops at a local maximum where two
  components share a cluster and one covers two; the moves leave it. Its responsibilities
  weigh the codes into the diagonal mixture: :func:`fit_mixture_through_split_merge`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import SpectralClustering
from sklearn.mixture import GaussianMixture
from torch import Tensor

from ..optional_umap import import_umap
from .split_merge_em import full_covariance_em, split_and_merge_em

__all__ = [
    "MERGED_COMPONENTS_PER_CLUSTER", "MIXTURE_STARTS", "align_to_labels", "component_overlap",
    "component_responsibilities", "fit_mixture_through_merged_components",
    "fit_mixture_through_refined_merge", "fit_mixture_through_split_merge",
    "fit_mixture_through_umap", "fit_mixture_to_codes",
    "merge_components", "merged_responsibilities", "mixture_from_responsibilities",
    "refine_responsibilities", "refined_mixture",
]


def fit_mixture_to_codes(
    codes: Tensor, num_clusters: int, seed: int, n_init: int = 10
) -> tuple[Tensor, Tensor, Tensor]:
    """A diagonal GaussianMixture (scikit-learn) on codes (N, D).

    Returns weights (K,), means (K, D) and scales (K, D) as float32 tensors.
    """
    gmm = GaussianMixture(
        num_clusters, covariance_type="diag", n_init=n_init, random_state=seed, reg_covar=1e-4
    )
    gmm.fit(codes.detach().cpu().double().numpy())
    return (
        torch.from_numpy(gmm.weights_.astype(np.float32)),
        torch.from_numpy(gmm.means_.astype(np.float32)),
        torch.from_numpy(np.sqrt(gmm.covariances_).astype(np.float32)),
    )


def mixture_from_responsibilities(
    codes: Tensor, responsibilities: np.ndarray, reg_covar: float = 1e-4
) -> tuple[Tensor, Tensor, Tensor]:
    """The diagonal mixture whose components are the responsibility-weighted moments of codes.

    Args:
        codes (N, D); responsibilities (N, K), rows summing to 1.
    Returns:
        weights (K,) = mean_n r_nk; means (K, D) = sum_n r_nk z_n / sum_n r_nk; scales (K, D),
        the square roots of the weighted variances plus ``reg_covar`` (as scikit-learn's).
    """
    z = codes.detach().cpu().double().numpy()
    r = np.asarray(responsibilities, dtype=np.float64)
    mass = r.sum(0) + 10 * np.finfo(np.float64).eps  # (K,)
    means = r.T @ z / mass[:, None]  # (K, D)
    var = np.einsum("nk,nkd->kd", r, (z[:, None] - means) ** 2) / mass[:, None] + reg_covar
    return (
        torch.from_numpy((mass / mass.sum()).astype(np.float32)),
        torch.from_numpy(means.astype(np.float32)),
        torch.from_numpy(np.sqrt(var).astype(np.float32)),
    )


def fit_mixture_through_umap(
    codes: Tensor, num_clusters: int, seed: int, n_init: int = 10, n_neighbors: int = 20
) -> tuple[Tensor, Tensor, Tensor]:
    """N2D's start: a full-covariance GaussianMixture on a K-dimensional UMAP embedding of the
    codes (N, D) partitions them (min_dist 0, ``n_neighbors`` neighbours, ``random_state``
    seed, so one thread and the same embedding every time), and
    :func:`mixture_from_responsibilities` turns its responsibilities into a diagonal mixture of
    the codes. Returns weights (K,), means (K, D) and scales (K, D) as float32 tensors.
    """
    umap = import_umap("mixture_start='umap'", "use mixture_start='codes'")
    z = codes.detach().cpu().float().numpy()
    if len(z) <= n_neighbors:
        raise ValueError(f"mixture_start='umap' needs more than {n_neighbors} data (the UMAP "
                         f"neighbours), got {len(z)}; use mixture_start='codes'")
    with warnings.catch_warnings():  # that random_state means one thread: known, and wanted
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        embedding = umap.UMAP(n_neighbors=n_neighbors, n_components=num_clusters,
                              min_dist=0.0, random_state=seed).fit_transform(z)
    gmm = GaussianMixture(num_clusters, covariance_type="full", n_init=n_init,
                          random_state=seed).fit(embedding)
    return mixture_from_responsibilities(codes, gmm.predict_proba(embedding))


#: the ``merged`` start's components per cluster, M / K. Fashion-MNIST, the 256-256-1024
#: autoencoder's codes after 40 epochs, 2 seeds x 3 mixture seeds (BENCHMARKS.md, issue 16):
#: M = 20 gave ACC 0.622 to 0.662 against 0.553 and 0.621 for 10 components; 25, 30 and 40
#: varied more (0.56 to 0.69).
MERGED_COMPONENTS_PER_CLUSTER = 2


def component_overlap(responsibilities: np.ndarray) -> np.ndarray:
    """How much two mixture components share the data: A_ml = sum_n r_nm r_nl / sqrt(
    sum_n r_nm^2 sum_n r_nl^2), the cosine of their responsibility columns.

    Args:
        responsibilities: (N, M), rows summing to 1.
    Returns:
        (M, M) symmetric, in [0, 1], ones on the diagonal (0 off it for an empty component).
    """
    r = np.asarray(responsibilities, dtype=np.float64)
    gram = r.T @ r  # (M, M)
    norm = np.sqrt(np.maximum(np.diag(gram), np.finfo(np.float64).tiny))
    overlap = gram / np.outer(norm, norm)
    np.fill_diagonal(overlap, 1.0)
    return overlap


def merged_responsibilities(
    codes: Tensor, num_clusters: int, seed: int,
    components_per_cluster: int = MERGED_COMPONENTS_PER_CLUSTER,
) -> np.ndarray:
    """Over-cluster, then merge: a full-covariance GaussianMixture (scikit-learn, ``random_state``
    seed) with M = components_per_cluster x K components on codes (N, D) gives responsibilities
    r (N, M) (:func:`component_responsibilities`), and :func:`merge_components` puts each
    component m in one of K clusters g(m).

    Returns:
        R (N, K), R_nk = sum_{m: g(m) = k} r_nm: rows sum to 1.
    """
    num_components = components_per_cluster * num_clusters
    if len(codes) < num_components:
        raise ValueError(f"mixture_start='merged' fits {num_components} components and needs at "
                         f"least as many data, got {len(codes)}; use mixture_start='codes'")
    return merge_components(component_responsibilities(codes, num_components, seed),
                            num_clusters, seed)


def component_responsibilities(codes: Tensor, num_components: int, seed: int) -> np.ndarray:
    """The responsibilities r (N, M) of a full-covariance GaussianMixture (scikit-learn,
    ``random_state`` seed, M = num_components) fitted to codes (N, D)."""
    z = codes.detach().cpu().double().numpy()
    gmm = GaussianMixture(num_components, covariance_type="full", random_state=seed,
                          reg_covar=1e-4).fit(z)
    return gmm.predict_proba(z)


def merge_components(responsibilities: np.ndarray, num_clusters: int, seed: int) -> np.ndarray:
    """Group M components into K clusters g(m) by spectral clustering (scikit-learn,
    ``assign_labels="cluster_qr"``, no random restarts) of :func:`component_overlap`.

    Args:
        responsibilities: r (N, M), rows summing to 1 (for a consensus, the columns of several
            mixtures side by side, divided by their number).
    Returns:
        R (N, K), R_nk = sum_{m: g(m) = k} r_nm.
    """
    r = np.asarray(responsibilities, dtype=np.float64)
    group = SpectralClustering(num_clusters, affinity="precomputed", random_state=seed,
                               assign_labels="cluster_qr").fit_predict(component_overlap(r))
    merged = np.zeros((len(r), num_clusters))
    np.add.at(merged.T, group, r.T)  # each cluster's components summed
    return merged


def fit_mixture_through_merged_components(
    codes: Tensor, num_clusters: int, seed: int,
    components_per_cluster: int = MERGED_COMPONENTS_PER_CLUSTER,
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``merged`` start: :func:`merged_responsibilities` of codes (N, D) turned into a
    diagonal mixture of the codes by :func:`mixture_from_responsibilities`. Returns weights (K,),
    means (K, D) and scales (K, D) as float32 tensors.
    """
    return mixture_from_responsibilities(
        codes, merged_responsibilities(codes, num_clusters, seed, components_per_cluster))


def refined_mixture(codes: Tensor, responsibilities: np.ndarray, seed: int,
                    reg_covar: float = 1e-4) -> GaussianMixture:
    """EM of a full-covariance GaussianMixture (scikit-learn) on codes (N, D), started at the
    responsibility-weighted moments of its K components and run to convergence (tolerance 1e-4,
    at most 500 iterations; a fit stopped there is returned, still a better start).

    Args:
        responsibilities: r (N, K), rows summing to 1; a component with no mass is an error.
    Returns:
        The fitted GaussianMixture (its ``predict_proba`` and ``score`` on the codes).
    """
    z = codes.detach().cpu().double().numpy()
    r = np.asarray(responsibilities, dtype=np.float64)
    mass = r.sum(0)  # (K,)
    if (mass <= 0).any():
        raise ValueError(f"refined_mixture: components {np.flatnonzero(mass <= 0)} hold no data; "
                         "start from responsibilities that give every component some")
    means = r.T @ z / mass[:, None]  # (K, D)
    cov = np.stack([(r[:, k, None] * (z - means[k])).T @ (z - means[k]) / mass[k]
                    for k in range(len(mass))])  # (K, D, D), one component at a time
    return full_covariance_em(z, mass, means, cov, 500, seed, reg_covar)


def refine_responsibilities(codes: Tensor, responsibilities: np.ndarray, seed: int,
                            reg_covar: float = 1e-4) -> np.ndarray:
    """The responsibilities (N, K) of :func:`refined_mixture` on codes (N, D), started at
    responsibilities r (N, K): rows summing to 1."""
    gmm = refined_mixture(codes, responsibilities, seed, reg_covar)
    return gmm.predict_proba(codes.detach().cpu().double().numpy())


def fit_mixture_through_refined_merge(
    codes: Tensor, num_clusters: int, seed: int,
    components_per_cluster: int = MERGED_COMPONENTS_PER_CLUSTER,
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``merged-refined`` start: :func:`merged_responsibilities` of codes (N, D), refined by
    :func:`refine_responsibilities`, turned into a diagonal mixture of the codes by
    :func:`mixture_from_responsibilities`. Returns weights (K,), means (K, D) and scales (K, D)
    as float32 tensors.
    """
    merged = merged_responsibilities(codes, num_clusters, seed, components_per_cluster)
    return mixture_from_responsibilities(codes, refine_responsibilities(codes, merged, seed))


def fit_mixture_through_split_merge(
    codes: Tensor, num_clusters: int, seed: int,
    components_per_cluster: int = MERGED_COMPONENTS_PER_CLUSTER,
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``split-merge`` start: the :func:`refined_mixture` of the merged partition of codes
    (N, D), searched further by :func:`~varclust.model.split_merge_em.split_and_merge_em`; its
    responsibilities turned into a diagonal mixture by :func:`mixture_from_responsibilities`.
    Returns weights (K,), means (K, D) and scales (K, D) as float32 tensors.
    """
    merged = merged_responsibilities(codes, num_clusters, seed, components_per_cluster)
    z = codes.detach().cpu().double().numpy()
    searched = split_and_merge_em(z, refined_mixture(codes, merged, seed), seed)
    return mixture_from_responsibilities(codes, searched.predict_proba(z))


#: ``FitConfig.mixture_start`` -> f(codes (N, D), K, seed) -> (weights, means, scales)
MIXTURE_STARTS: dict[str, Callable[[Tensor, int, int], tuple[Tensor, Tensor, Tensor]]] = {
    "codes": fit_mixture_to_codes,
    "umap": fit_mixture_through_umap,
    "merged": fit_mixture_through_merged_components,
    "merged-refined": fit_mixture_through_refined_merge,
    "split-merge": fit_mixture_through_split_merge,
}


def align_to_labels(
    weights: Tensor, loc: Tensor, scale: Tensor, codes: Tensor, cluster: Tensor,
    cluster_mask: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Reorder a mixture's components so that component k is the one the labelled codes of
    class k fall in (Hungarian matching on the summed log responsibilities, scipy).

    Args:
        weights (K,), loc (K, D), scale (K, D): the mixture; codes (N, D); cluster (N,) labels
        read where cluster_mask (N,) is true.
    Returns:
        weights, loc, scale reordered.
    """
    mask = cluster_mask.cpu()
    z, labels = codes.detach().cpu()[mask], cluster.cpu()[mask]
    log_joint = torch.distributions.Normal(loc, scale).log_prob(z[:, None]).sum(-1) + weights.log()
    log_resp = log_joint - log_joint.logsumexp(-1, keepdim=True)  # (L, K)
    k = len(weights)
    score = torch.zeros(k, k, dtype=log_resp.dtype).index_add_(0, labels, log_resp)
    _, order = linear_sum_assignment(score.numpy(), maximize=True)  # class -> component
    order = torch.as_tensor(order)
    return weights[order], loc[order], scale[order]
