"""One registry of priors, guides, likelihoods and generators, by name, so that each is a
one-argument change.

    VarClust(prior="bayes-gmm", guide="relaxed", likelihood="cbernoulli", generator="conv")
    varclust fit --prior bayes-gmm --guide relaxed --likelihood cbernoulli

A name looks up a factory here. Instead of a name, ``VarClust`` also takes your own object:

- prior: a PyroModule instance, or a callable ``f(num_clusters=K, latent_dim=D)`` returning one
  (e.g. a subclass of :class:`~varclust.model.priors.MixturePrior`);
- guide: a PyroModule instance, or ``f(encoder=..., num_clusters=K, latent_dim=D)`` (e.g. a
  subclass of :class:`~varclust.guides.base.ClusterGuide`);
- likelihood: a :class:`~varclust.model.likelihoods.Likelihood` instance or a no-argument callable.

``register_prior/register_guide/register_likelihood(name, factory)`` add names (also for the
command line, once the registering module is imported); ``register_generator(name, entry)``
adds a generator p(x | z) (:class:`GeneratorEntry`: how its model is built, what data it takes,
its own pretraining if any). The registry checks the names of every
:class:`~varclust.config.FitConfig` (it adds :func:`check_config_names` to
:data:`varclust.config.NAME_CHECKS`). Built-in factories receive the
:class:`~varclust.config.FitConfig` settings that concern them (Dirichlet concentration, global
guide, the DP's concentration and settling steps, temperature schedule) as keyword arguments;
the networks built here (encoder, decoder, U-Net) compute in the config's ``precision``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .config import NAME_CHECKS, FitConfig
from .guides.base import ClusterGuide
from .guides.encoders import make_encoder
from .guides.marginal import MarginalGuide
from .guides.mixture import MixtureGuide
from .guides.relaxed import RelaxedGuide
from .inference.diffusion_pretrain import pretrain_diffusion_generator
from .model.bayesian_prior import BayesianGaussianMixturePrior
from .model.categorical256 import GreyLevelCategoricalLikelihood
from .model.decoders import make_decoder
from .model.diffusion import ConditionalDDPM, DiffusionClusteringModel, check_unit_interval
from .model.dp_full_prior import FullCovarianceDirichletProcessPrior
from .model.dp_prior import DirichletProcessPrior
from .model.full_gmm_prior import FullCovarianceGaussianMixturePrior
from .model.generative import ClusteringModel, GenerativeModel
from .model.likelihoods import (
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    GaussianLikelihood,
    LaplaceLikelihood,
    Likelihood,
)
from .model.normal_prior import StandardNormalPrior
from .model.precision import COMPUTE_DTYPES
from .model.priors import GaussianMixturePrior, MixturePrior

__all__ = [
    "CUSTOM",
    "GENERATORS",
    "GUIDES",
    "GeneratorEntry",
    "LIKELIHOODS",
    "PRIORS",
    "build_likelihood",
    "build_model_and_guide",
    "check_config_names",
    "check_data",
    "check_name",
    "generator_of",
    "register_generator",
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
    "dp-full": FullCovarianceDirichletProcessPrior,
    "gmm-full": FullCovarianceGaussianMixturePrior,
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


def _compute_dtype(config: FitConfig) -> torch.dtype:
    """The dtype the networks compute in: the config's ``precision``."""
    return COMPUTE_DTYPES[config.precision]


@dataclass(frozen=True)
class GeneratorEntry:
    """A generator p(x | z): how the model around it is built, and what it needs.

    Attributes:
        build: ``(config, data_shape, prior, likelihood) -> model``, a
            :class:`~varclust.model.generative.GenerativeModel` for data of ``data_shape``.
        check_data: ``(x, likelihood)``: ValueError for data x (N, ...) the generator cannot
            model, before a model is built (afterwards ``model.check_data``).
        check_components: ``(config, custom)``: ValueError for priors, guides or user objects
            it cannot work with, before anything is built. Default: any.
        pretrain: ``(model, guide, x, config, on_epoch, bar, dist_kw) -> losses``: the
            generator's own autoencoder pretraining; None: the model's ``pretraining_loss``
            minimised by :class:`~varclust.inference.pretrain.Pretrainer` (checkpointed).
        defaults: command-line defaults when this generator is chosen (FitConfig field ->
            value), applied before the data set's.
    """

    build: Callable[..., GenerativeModel]
    check_data: Callable[[Tensor, Likelihood], None]
    check_components: Callable[[FitConfig, dict[str, Any]], None] = lambda config, custom: None
    pretrain: Callable[..., list[float]] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


def _decoder_entry(network: str) -> GeneratorEntry:
    """A decoder network (``mlp`` or ``conv``) with the likelihood: :class:`ClusteringModel`."""

    def build(config: FitConfig, data_shape: tuple[int, ...], prior: nn.Module,
              likelihood: Likelihood) -> ClusteringModel:
        decoder = make_decoder(network, config.latent_dim, likelihood.decoder_shape(data_shape),
                               config.hidden, _compute_dtype(config))
        model = ClusteringModel(prior, decoder, likelihood, data_shape)
        model.label_weight = config.label_weight
        return model

    return GeneratorEntry(build=build, check_data=lambda x, likelihood: likelihood.check_data(x))


def _diffusion_model(config: FitConfig, data_shape: tuple[int, ...], prior: nn.Module,
                     likelihood: Likelihood) -> DiffusionClusteringModel:
    generator = ConditionalDDPM(data_shape, config.latent_dim, config.diffusion_steps,
                                config.diffusion_schedule, config.diffusion_width,
                                config.latent_dropout, _compute_dtype(config))
    return DiffusionClusteringModel(prior, generator, config.diffusion_weight)


def _diffusion_components(config: FitConfig, custom: dict[str, Any]) -> None:
    if config.prior != "gmm" or config.guide != "marginal" or custom:
        raise ValueError("the ddpm generator works with prior='gmm' and guide='marginal' only")


def _pretrain_diffusion(model, guide, x, config, on_epoch, bar, dist_kw) -> list[float]:
    """The diffusion generator's pretraining; its first stage trains the encoder with a
    temporary decoder of ``network`` and the likelihood, built here."""

    def temporary_autoencoder() -> tuple[nn.Module, Likelihood]:
        likelihood = build_likelihood(config).to(x.device)
        try:
            decoder = make_decoder(config.network, config.latent_dim,
                                   likelihood.decoder_shape(tuple(x.shape[1:])), config.hidden,
                                   _compute_dtype(config))
        except ValueError as err:
            raise ValueError(f"{err}; or pretrain as a diffusion autoencoder, which needs no "
                             "decoder: ddpm_pretrain='diffusion' (--ddpm-pretrain diffusion)"
                             ) from None
        return decoder.to(x.device), likelihood

    return pretrain_diffusion_generator(guide.encoder, model.generator, x, config, on_epoch, bar,
                                        dist_kw, temporary_autoencoder)


GENERATORS: dict[str, GeneratorEntry] = {
    "mlp": _decoder_entry("mlp"),
    "conv": _decoder_entry("conv"),
    # the conditional diffusion model (issue 4): its noisy gradients need a smaller step than
    # the decoders' (digits, EM: ACC 0.63 at 2e-3, 0.81 at 5e-4; BENCHMARKS.md)
    "ddpm": GeneratorEntry(build=_diffusion_model,
                           check_data=lambda x, likelihood: check_unit_interval(x),
                           check_components=_diffusion_components, pretrain=_pretrain_diffusion,
                           defaults={"learning_rate": 5e-4}),
}


def _options(kind: str, name: str, config: FitConfig) -> dict[str, Any]:
    """The config settings a built-in factory takes."""
    if kind == "prior" and name == "bayes-gmm":
        return {"concentration": config.dirichlet_concentration,
                "global_guide": config.global_guide}
    if kind == "prior" and name in ("dp", "dp-full"):
        return {"concentration": config.dp_concentration,
                "learn_concentration": config.dp_learn_concentration,
                "settle_steps": config.dp_settle_steps,
                "epoch_settle_steps": config.dp_epoch_settle_steps,
                "epoch_settle_on": config.dp_epoch_settle_on,
                "scale_pseudo_count": config.dp_scale_pseudo_count}
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


def register_generator(name: str, entry: GeneratorEntry) -> None:
    """Add a generator p(x | z) (``FitConfig(generator=name)``, ``--generator name``)."""
    if not isinstance(name, str) or not name or name == CUSTOM:
        raise ValueError(f"a generator name must be a non-empty string other than {CUSTOM!r}")
    if not isinstance(entry, GeneratorEntry):
        raise TypeError(f"the generator {name!r} must be registered as a GeneratorEntry")
    GENERATORS[name] = entry


def generator_of(config: FitConfig) -> GeneratorEntry:
    """The entry of the generator the config builds (``generator``, else ``network``)."""
    return GENERATORS[config.generator_name]


def check_config_names(config: FitConfig) -> None:
    """ValueError unless the config's prior, guide, likelihood and generator are registered."""
    for kind in ("prior", "guide", "likelihood"):
        check_name(kind, getattr(config, kind))
    if config.generator is not None and config.generator not in GENERATORS:
        raise ValueError(f"generator must be one of {sorted(GENERATORS)} (or None: the "
                         f"network's decoder), got {config.generator!r}")


NAME_CHECKS.append(check_config_names)


def check_data(config: FitConfig, x: Tensor, custom: dict[str, Any] | None = None) -> None:
    """ValueError for data x (N, ...) outside the support of the generator the config builds
    (for a decoder, the likelihood's), before any model is built."""
    likelihood = build_likelihood(config, (custom or {}).get("likelihood"))
    generator_of(config).check_data(x, likelihood)


def check_name(kind: str, name: str) -> None:
    """Raise ValueError unless ``name`` is a registered ``kind`` or "custom"."""
    if name != CUSTOM and name not in _TABLES[kind]:
        raise ValueError(
            f"unknown {kind} {name!r}; choose one of {sorted(_TABLES[kind])}; a name registered "
            f"in another session needs register_{kind}({name!r}, ...) run (its module imported) "
            f"first; or pass your own object as VarClust({kind}=...)"
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
    if kind in _BASES and not isinstance(module, _BASES[kind]):
        raise TypeError(
            f"the {kind} {type(module).__name__} must subclass {_BASES[kind].__module__}."
            f"{_BASES[kind].__name__}, whose hooks the fit calls"
        )
    return module


#: the base classes whose optional hooks (no-op by default) the fit calls
_BASES = {"prior": MixturePrior, "guide": ClusterGuide}


def build_likelihood(config: FitConfig, custom: Any = None) -> Likelihood:
    """The likelihood named by ``config.likelihood`` (or the custom one)."""
    return _make("likelihood", config.likelihood, custom, config)


def build_model_and_guide(
    config: FitConfig, data_shape: tuple[int, ...], custom: dict[str, Any] | None = None
) -> tuple[GenerativeModel, ClusterGuide]:
    """Build the model and its guide for data of shape ``data_shape`` (one datum).

    The generator named by the config (:data:`GENERATORS`) builds the model around the prior
    and likelihood. ``custom`` maps "prior"/"guide"/"likelihood" to user objects or factories,
    used where the config says "custom". A prior with a guide of its globals (Bayesian) has it
    attached to the guide.
    """
    custom = custom or {}
    generator = generator_of(config)
    generator.check_components(config, custom)
    k, d = config.num_clusters, config.latent_dim
    prior = _make("prior", config.prior, custom.get("prior"), config, num_clusters=k, latent_dim=d)
    likelihood = build_likelihood(config, custom.get("likelihood"))
    model = generator.build(config, tuple(data_shape), prior, likelihood)
    encoder = make_encoder(config.network, data_shape, d, config.hidden, _compute_dtype(config))
    guide = _make("guide", config.guide, custom.get("guide"), config,
                  encoder=encoder, num_clusters=k, latent_dim=d)
    guide.bind_model(model)
    guide.attach_global_guide(prior.globals_guide())
    return model, guide
