"""What a fitted model and guide say about data: the codes and the cluster posterior."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..modes import evaluating
from .batching import batched_apply

__all__ = ["ClusterPrediction", "encode_codes", "encode_means", "predict_clusters"]


@dataclass
class ClusterPrediction:
    """Cluster assignments of N data points under K clusters.

    Attributes:
        labels: (N,) the posterior mode of the cluster.
        responsibilities: (N, K) the cluster posterior, rows sum to 1.
        entropy: (N,) the posterior's entropy in nats (0: certain, log K: undecided).
    """

    labels: np.ndarray
    responsibilities: np.ndarray
    entropy: np.ndarray


def encode_codes(guide: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """q(z | x) of data x (N, ...), in batches: its loc and scale, each (N, D)."""
    loc, scale = batched_apply(lambda b: torch.cat(guide.encode(b), -1), x).chunk(2, -1)
    return loc, scale


def encode_means(guide: nn.Module, x: Tensor) -> Tensor:
    """The means of q(z | x) of data x (N, ...), in batches: (N, D)."""
    return batched_apply(lambda b: guide.encode(b)[0], x)


@torch.no_grad()
def predict_clusters(model: nn.Module, guide: nn.Module, x: Tensor) -> ClusterPrediction:
    """The guide's cluster posterior of data x (N, ...) under the model's prior (the guide in
    eval mode meanwhile; its mode is restored after)."""
    with evaluating(guide):
        log_resp = batched_apply(lambda b: guide.cluster_logits(b, model.prior), x)
    resp = log_resp.exp()
    entropy = -(resp * log_resp).sum(-1)
    return ClusterPrediction(
        labels=log_resp.argmax(-1).cpu().numpy(),
        responsibilities=resp.cpu().numpy(),
        entropy=entropy.cpu().numpy(),
    )
