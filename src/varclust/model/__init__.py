"""Generative side: priors over codes, decoders, likelihoods and the model that joins them."""

from .bayesian_prior import BayesianGaussianMixturePrior
from .categorical256 import GreyLevelCategorical, GreyLevelCategoricalLikelihood
from .decoders import ConvDecoder, MLPDecoder, make_decoder
from .dp_full_prior import FullCovarianceDirichletProcessPrior
from .dp_prior import DirichletProcessPrior
from .full_gmm_prior import FullCovarianceGaussianMixturePrior
from .generative import ClusteringModel, GenerativeModel, data_plate
from .likelihoods import (
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    GaussianLikelihood,
    LaplaceLikelihood,
    Likelihood,
)
from .normal_prior import StandardNormalPrior
from .priors import GaussianMixturePrior, MixturePrior

__all__ = [
    "BayesianGaussianMixturePrior",
    "BernoulliLikelihood",
    "ClusteringModel",
    "ContinuousBernoulliLikelihood",
    "ConvDecoder",
    "DirichletProcessPrior",
    "FullCovarianceDirichletProcessPrior",
    "FullCovarianceGaussianMixturePrior",
    "GaussianLikelihood",
    "GaussianMixturePrior",
    "GenerativeModel",
    "GreyLevelCategorical",
    "GreyLevelCategoricalLikelihood",
    "LaplaceLikelihood",
    "Likelihood",
    "MLPDecoder",
    "MixturePrior",
    "StandardNormalPrior",
    "data_plate",
    "make_decoder",
]
