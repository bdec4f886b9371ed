"""Amortized guides q(z, c | x) over the same model, and their encoders."""

from .encoders import ConvEncoder, MLPEncoder, make_encoder
from .marginal import MarginalGuide

__all__ = ["ConvEncoder", "MLPEncoder", "MarginalGuide", "make_encoder"]
