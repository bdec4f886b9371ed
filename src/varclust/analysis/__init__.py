"""Analysis of fits: ArviZ InferenceData, plots and the HTML report."""

from .inference_data import to_inference_data
from .plots import (
    plot_cluster_samples,
    plot_compare,
    plot_confusion_matrix,
    plot_entropy_histogram,
    plot_latent_map,
    plot_training_curve,
)

__all__ = [
    "plot_cluster_samples",
    "plot_compare",
    "plot_confusion_matrix",
    "plot_entropy_histogram",
    "plot_latent_map",
    "plot_training_curve",
    "to_inference_data",
]
