"""Analysis of fits: ArviZ InferenceData, held-out comparison, plots and the HTML report."""

from .heldout import heldout_log_likelihood, heldout_pointwise, heldout_table
from .inference_data import PointEstimateWarning, to_inference_data
from .plots import (
    plot_cluster_samples,
    plot_compare,
    plot_confusion_matrix,
    plot_entropy_histogram,
    plot_heldout,
    plot_latent_map,
    plot_training_curve,
)
from .report import write_report

__all__ = [
    "PointEstimateWarning",
    "heldout_log_likelihood",
    "heldout_pointwise",
    "heldout_table",
    "plot_cluster_samples",
    "plot_compare",
    "plot_confusion_matrix",
    "plot_entropy_histogram",
    "plot_heldout",
    "plot_latent_map",
    "plot_training_curve",
    "to_inference_data",
    "write_report",
]
