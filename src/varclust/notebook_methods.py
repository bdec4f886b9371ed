"""The scikit-learn-style conveniences of :class:`varclust.VarClust` for notebooks, written on
its core methods (``fit``, ``predict``, ``encode``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from torch import Tensor

from .inference.prediction import predict_clusters
from .summaries import cluster_means, describe, mixture_parameters

__all__ = ["NotebookMethods"]


class NotebookMethods:
    """``fit_predict``, ``predict_proba``, ``transform``, ``mixture_``, ``cluster_means`` and a
    one-line ``repr`` for a class with ``fit``, ``predict``, ``encode``, ``model`` and
    ``guide`` (:class:`varclust.VarClust`)."""

    def fit_predict(self, X: ArrayLike | Tensor, y: ArrayLike | None = None, **fit: Any
                    ) -> np.ndarray:
        """``fit(X, y, **fit)``, then the cluster of each datum: (N,)."""
        return self.fit(X, y, **fit).predict(X).labels

    def predict_proba(self, X: ArrayLike | Tensor) -> np.ndarray:
        """The cluster posterior of X (N, ...): (N, K), rows sum to 1."""
        return self.predict(X).responsibilities

    def transform(self, X: ArrayLike | Tensor) -> np.ndarray:
        """The codes of X (N, ...): posterior means (N, D), as :meth:`encode`."""
        return self.encode(X)

    @property
    def mixture_(self) -> dict[str, np.ndarray]:
        """The prior's mixture: ``weights`` (K,), ``means`` (K, D), ``scales`` (K, D)."""
        self._require_fitted()
        return mixture_parameters(self.model.prior)

    def cluster_means(self, X: ArrayLike | Tensor) -> np.ndarray:
        """The mean image of each cluster over X (N, ...), weighted by the responsibilities:
        (K, *data_shape)."""
        self._require_fitted()
        x = self._prepare(X)
        return cluster_means(x, predict_clusters(self.model, self.guide, x).responsibilities)

    def __repr__(self) -> str:
        return describe(self)
