"""Amortized guides q(z, c | x) over the same model, and their encoders."""

from .base import ClusterGuide, code_posterior
from .cluster_heads import ClusterHeads, PerClusterGuide
from .encoders import ConvEncoder, MLPEncoder, make_encoder
from .marginal import MarginalGuide
from .mixture import MixtureGuide
from .relaxed import RelaxedGuide, annealed_temperature

__all__ = [
    "ClusterGuide",
    "ClusterHeads",
    "ConvEncoder",
    "MLPEncoder",
    "MarginalGuide",
    "MixtureGuide",
    "PerClusterGuide",
    "RelaxedGuide",
    "annealed_temperature",
    "code_posterior",
    "make_encoder",
]
