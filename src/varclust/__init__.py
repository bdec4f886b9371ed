"""varclust: deep clustering with Gaussian-mixture latent-variable models in Pyro.

Importing varclust switches on Pyro's ``module_local_params`` setting, so that every fitted
model keeps its own parameters (several fits can live in one notebook) and parameters are
ordinary ``torch.nn.Parameter`` objects trained by ``torch.optim`` (Pyro's svi_torch example).
"""

import pyro

from ._version import __version__

pyro.settings.set(module_local_params=True)

from .config import FitConfig  # noqa: E402
from .data import DatasetNotFoundError, ImageDataset, load_dataset  # noqa: E402
from .estimator import ClusterPrediction, VarClust  # noqa: E402
from .metrics import cluster_accuracy, clustering_scores  # noqa: E402
from .restarts import fit_restarts  # noqa: E402

__all__ = [
    "ClusterPrediction",
    "DatasetNotFoundError",
    "FitConfig",
    "ImageDataset",
    "VarClust",
    "__version__",
    "cluster_accuracy",
    "clustering_scores",
    "fit_restarts",
    "load_dataset",
]
