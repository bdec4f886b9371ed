"""Analysis of fits: plots (and, later, ArviZ InferenceData)."""

from .plots import plot_cluster_samples, plot_training_curve

__all__ = ["plot_cluster_samples", "plot_training_curve"]
