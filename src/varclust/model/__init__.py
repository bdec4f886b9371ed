"""Generative side: priors over codes, decoders, likelihoods and the model that joins them."""

from .decoders import ConvDecoder, MLPDecoder, make_decoder
from .generative import ClusteringModel, data_plate
from .likelihoods import BernoulliLikelihood, GaussianLikelihood, Likelihood
from .priors import GaussianMixturePrior

__all__ = [
    "BernoulliLikelihood",
    "ClusteringModel",
    "ConvDecoder",
    "GaussianLikelihood",
    "GaussianMixturePrior",
    "Likelihood",
    "MLPDecoder",
    "data_plate",
    "make_decoder",
]
