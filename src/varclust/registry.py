"""One registry of priors, guides and likelihoods, by name, so that each is a one-argument change.

    VarClust(prior="bayes-gmm", guide="relaxed", likelihood="cbernoulli")
    varclust fit --prior bayes-gmm --guide relaxed --likelihood cbernoulli

A name looks up a factory here. Instead of a name, ``VarClust`` also takes your own object:

- prior: a PyroModule instance, or a callable ``f(num_clusters=K, latent_dim=D)`` returning one
  (e.g. a subclass of :class:`~varclust.model.priors.MixturePrior`);
- guide: a PyroModule instance, or ``f(encoder=..., num_clusters=K, latent_dim=D)`` (e.g. a
  subclass of :class:`~varclust.guides.base.ClusterGuide`);
- likelihood: a :class:`~varclust.model.likelihoods.Likelihood` instance or a no-argument callable.

``register_prior/register_guide/register_likelihood(name, factory)`` add names (also for the
command line, once the registering module is imported). Built-in factories receive the
:class:`~varclust.config.FitConfig` settings that concern them (Dirichlet concentration, global
guide, the DP's concentration and settling steps, temperature schedule) as keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from .guides.encoders import make_encoder
from .guides.marginal import MarginalGuide
from .guides.mixture import MixtureGuide
from .guides.relaxed import RelaxedGuide
from .model.bayesian_prior import BayesianGaussianMixturePrior
from .model.categorical256 import GreyLevelCategoricalLikelihood
from .model.decoders import make_decoder
from .model.dp_prior import DirichletProcessPrior
from .model.generative import ClusteringModel
from .model.likelihoods import (
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    GaussianLikelihood,
    LaplaceLikelihood,
    Likelihood,
)
from .model.normal_prior import StandardNormalPrior
from .model.priors import GaussianMixturePrior

if TYPE_CHECKING:
    from .config import FitConfig

__all__ = [
    "CUSTOM",
    "GUIDES",
    "LIKELIHOODS",
    "PRIORS",
    "build_likelihood",
    "build_model_and_guide",
    "check_name",
    "register_guide",
    "register_likelihood",
    "register_prior",
]

#: the name a config records for a component given as an object rather than a name
CUSTOM = "custom"

PRIORS: dict[str, Callable[..., nn.Module]] = {
    "gmm": GaussianMixturePrior,
    "normal": StandardNormalPrior,
    "bayes-gmm": BayesianGaussianMixturePrior,
    "dp": DirichletProcessPrior,
}
GUIDES: dict[str, Callable[..., nn.Module]] = {
    "marginal": lambda encoder, num_clusters, latent_dim: MarginalGuide(encoder),
    "mixture": MixtureGuide,
    "relaxed": RelaxedGuide,
}
LIKELIHOODS: dict[str, Callable[..., Likelihood]] = {
    "bernoulli": BernoulliLikelihood,
    "cbernoulli": ContinuousBernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "laplace": LaplaceLikelihood,
    "categorical256": GreyLevelCategoricalLikelihood,
}
_TABLES = {"prior": PRIORS, "guide": GUIDES, "likelihood": LIKELIHOODS}


def _options(kind: str, name: str, config: FitConfig) -> dict[str, Any]:
    """The config settings a built-in factory takes."""
    if kind == "prior" and name == "bayes-gmm":
        return {"concentration": config.dirichlet_concentration,
                "global_guide": config.global_guide}
    if kind == "prior" and name == "dp":
        return {"concentration": config.dp_concentration,
                "learn_concentration": config.dp_learn_concentration,
                "settle_steps": config.dp_settle_steps}
    if kind == "guide" and name == "relaxed":
        return {"temperature": config.temperature, "temperature_decay": config.temperature_decay,
                "temperature_min": config.temperature_min,
                "prior_temperature": config.prior_temperature}
    return {}


def _register(kind: str, name: str, factory: Callable[..., nn.Module]) -> None:
    if not isinstance(name, str) or not name or name == CUSTOM:
        raise ValueError(f"a {kind} name must be a non-empty string other than {CUSTOM!r}")
    if not callable(factory):
        raise TypeError(f"the {kind} factory for {name!r} must be callable")
    _TABLES[kind][name] = factory


def register_prior(name: str, factory: Callable[..., nn.Module]) -> None:
    """Add a prior: ``factory(num_clusters=K, latent_dim=D)`` returns a PyroModule."""
    _register("prior", name, factory)


def register_guide(name: str, factory: Callable[..., nn.Module]) -> None:
    """Add a guide: ``factory(encoder=..., num_clusters=K, latent_dim=D)`` returns one."""
    _register("guide", name, factory)


def register_likelihood(name: str, factory: Callable[[], Likelihood]) -> None:
    """Add a likelihood: ``factory()`` returns a :class:`Likelihood`."""
    _register("likelihood", name, factory)


def check_name(kind: str, name: str) -> None:
    """Raise ValueError unless ``name`` is a registered ``kind`` or "custom"."""
    if name != CUSTOM and name not in _TABLES[kind]:
        raise ValueError(
            f"unknown {kind} {name!r}; choose one of {sorted(_TABLES[kind])}, or pass your own "
            f"object as VarClust({kind}=...)"
        )


def _make(kind: str, name: str, custom: Any, config: FitConfig, **args: Any) -> nn.Module:
    if name == CUSTOM:
        if custom is None:
            raise ValueError(
                f"this config names a custom {kind}: pass the object or factory again, "
                f"e.g. VarClust({kind}=...) or VarClust.load(path, {kind}=...)"
            )
        module = custom if isinstance(custom, nn.Module) else custom(**args)
    else:
        check_name(kind, name)
        module = _TABLES[kind][name](**args, **_options(kind, name, config))
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"the {kind} factory returned a {type(module).__name__}, not a torch/Pyro module"
        )
    return module


def build_likelihood(config: FitConfig, custom: Any = None) -> Likelihood:
    """The likelihood named by ``config.likelihood`` (or the custom one)."""
    return _make("likelihood", config.likelihood, custom, config)


def build_model_and_guide(
    config: FitConfig, data_shape: tuple[int, ...], custom: dict[str, Any] | None = None
) -> tuple[ClusteringModel, nn.Module]:
    """Build the model and its guide for data of shape ``data_shape`` (one datum).

    ``custom`` maps "prior"/"guide"/"likelihood" to user objects or factories, used where the
    config says "custom". A prior with a ``global_guide`` (Bayesian) has it attached to the guide.
    """
    custom = custom or {}
    k, d = config.num_clusters, config.latent_dim
    prior = _make("prior", config.prior, custom.get("prior"), config, num_clusters=k, latent_dim=d)
    likelihood = build_likelihood(config, custom.get("likelihood"))
    decoder = make_decoder(config.generator_name, d, likelihood.decoder_shape(tuple(data_shape)),
                           config.hidden)
    model = ClusteringModel(prior, decoder, likelihood, tuple(data_shape))
    model.label_weight = config.label_weight
    encoder = make_encoder(config.network, data_shape, d, config.hidden)
    guide = _make("guide", config.guide, custom.get("guide"), config,
                  encoder=encoder, num_clusters=k, latent_dim=d)
    guide.bind_model(model)
    global_guide = getattr(prior, "global_guide", None)
    if global_guide is not None:
        if not hasattr(guide, "attach_global_guide"):
            raise TypeError(
                f"the prior {type(prior).__name__} has global parameters with their own guide; "
                "the guide must run it: subclass varclust.guides.ClusterGuide"
            )
        guide.attach_global_guide(global_guide)
    return model, guide
