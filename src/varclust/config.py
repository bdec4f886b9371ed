"""The configuration of a fit: what the model is and how it is trained."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from numbers import Integral, Real
from pathlib import Path
from typing import Any

__all__ = ["FitConfig", "NAME_CHECKS", "STRUCTURAL_KEYS"]

#: checks of the names of registered components (prior, guide, likelihood, generator), each
#: ``check(config)`` raising ValueError; :mod:`varclust.registry` adds its own when imported
#: (the registry imports this module, never the other way round)
NAME_CHECKS: list[Callable[[Any], None]] = []

#: keys that fix the shapes of parameters: a checkpoint only loads into a model that agrees on them
STRUCTURAL_KEYS = ("num_clusters", "latent_dim", "network", "hidden", "likelihood", "generator",
                   "diffusion_width")
#: keys of the swappable components (issue 3); they fix parameter shapes too
STRUCTURAL_KEYS += ("prior", "guide", "global_guide")


@dataclass
class FitConfig:
    """Every setting of a fit. Defaults follow VaDE (MLP 500-500-2000, D=10, Adam 2e-3).

    Model: ``num_clusters`` K >= 2, ``latent_dim`` D, ``network`` ("mlp" or "conv"; the conv nets
    take 28x28 or 32x32 images), ``hidden`` (encoder layer widths, mirrored by the decoder),
    ``likelihood`` ("bernoulli", "cbernoulli", "gaussian", "laplace", "categorical256"; see
    :mod:`varclust.registry`).
    Components (:mod:`varclust.registry`): ``prior`` ("gmm", "normal", "bayes-gmm", "dp"), ``guide``
    ("marginal", "mixture", "relaxed"); "custom" when an object was passed instead of a name.
    ``dirichlet_concentration`` (per cluster; < 1 is sparse) and ``global_guide`` ("map" or
    "mean-field") set up "bayes-gmm"; ``temperature`` T0, ``temperature_decay`` and
    ``temperature_min`` the relaxed guide's schedule T_e = max(T_min, T0 * decay^e), and
    ``prior_temperature`` T_p the fixed temperature of the relaxed model's p(w).
    Semi-supervised fits add ``label_weight`` * log p(c = label | z) for the labelled data.
    Training: ``epochs`` of SVI after ``pretrain_epochs`` of autoencoder pretraining (then a
    GaussianMixture fitted to the codes initialises the prior; 0 skips both), Adam with learning
    rate ``learning_rate`` multiplied by ``lr_decay`` after every epoch, gradients clipped to
    norm ``clip_norm``, mini-batches of ``batch_size``, ``seed`` for every random draw,
    ``device`` "auto", "cpu" or "cuda"; ``lr_scaling`` ("none", "sqrt", "linear") scales
    ``learning_rate`` from batch 256 to ``batch_size`` for large-batch training.

    EM (``method="em"``, ClusterDDPM's loop; ``epochs`` is then unused): ``em_iterations`` of
    ``m_step_epochs`` SVI epochs on the networks (prior frozen) followed by an E-step of
    ``e_step_iterations`` closed-form mixture EM steps on the codes (weights floored at
    ``e_step_min_weight``, variances plus ``e_step_reg_covar``). ``e_step`` picks the E-step
    (:data:`varclust.inference.em.E_STEPS`): "clusterddpm" (scikit-learn's GaussianMixture
    refitted to convergence on codes sampled from q, warm-started, as ClusterDDPM's code),
    "vade" (closed-form coordinate ascent on VaDE's bound with q's variances, never decreasing)
    or "means" (the closed form on q's means only; it contracts). Old configs'
    ``e_step_code_variance`` True / False load as "vade" / "means". ``em_lr_decay``: the
    learning rate's factor per M-step epoch (1: constant, as ClusterDDPM; ``lr_decay`` is SVI's).
    ``kl_warmup_iterations``: the M-step's KL weight rises linearly from 1 / (W + 1) to 1 over
    the first W EM iterations.
    Generator: ``generator`` None uses the decoder of ``network``; "mlp" or "conv" picks a
    decoder; "ddpm" the conditional diffusion model (images only, H and W divisible by 4) with
    ``diffusion_steps`` T, ``diffusion_schedule`` ("linear": Ho's 1e-4 .. 0.02 scaled
    by 1000 / T; "clusterddpm": 1e-4 .. 0.02 at any T; "cosine"), U-Net base width
    ``diffusion_width``, ``latent_dropout`` (classifier-free guidance), the noise loss weighted
    by ``diffusion_weight`` against the KL, and ``sample_steps`` (0: the ancestral sampler over
    all T steps; else the strided DDIM sampler with that many steps), ``guidance`` w.
    Its pretraining (``ddpm_pretrain``): "autoencoder" trains the encoder with a temporary
    ``network`` decoder for ``pretrain_epochs``, then the generator on the frozen codes for at
    most ``diffusion_pretrain_epochs``; "diffusion" trains both as a diffusion autoencoder for
    at most ``pretrain_epochs`` (ClusterDDPM). Either diffusion stage stops once the generator's
    ``latent_reliance`` reaches ``pretrain_reliance`` (0: runs all its epochs).
    Reliability: with an output folder, a checkpoint is also written every
    ``checkpoint_every_steps`` mini-batches inside an epoch (0: only after each epoch);
    ``max_bad_steps`` steps in a row with a non-finite loss or gradient stop the run (fewer are
    skipped and counted).
    From scratch (``pretrain_epochs=0``; :mod:`varclust.inference.regularisers`):
    ``cluster_information`` lambda >= 0 adds lambda * N * I_q(c; x) (the batch mutual information
    of q(c | x)) to the objective, a term outside the ELBO; ``kl_warmup_epochs`` E scales the
    latent terms of the ELBO (all but log p(x | z)) by min(1, (e + 1) / E) in epoch e
    (Bowman et al. 2016; Sonderby et al. 2016); 0 turns the warm-up off;
    ``augmentation_consistency`` gamma >= 0 adds gamma * N * KL(q(c | x) || q(c | shifted x)) for
    images shifted by one pixel (outside the ELBO).
    Dirichlet process (``prior="dp"``, :mod:`varclust.model.dp_prior`; ``num_clusters`` is then
    the truncation): ``dp_concentration`` alpha > 0 of the sticks Beta(1, alpha), fixed, or with
    ``dp_learn_concentration`` the mean of a Gamma(1, 1/alpha) hyperprior with a learned
    LogNormal posterior; ``dp_settle_steps`` SVI steps fit the DP's globals alone to the
    pretrained codes before the joint fit (0: none). The DP's globals always have a mean-field
    guide (``global_guide`` is bayes-gmm's setting).
    """

    num_clusters: int = 10
    latent_dim: int = 10
    network: str = "mlp"
    hidden: tuple[int, ...] = field(default=(500, 500, 2000))
    likelihood: str = "bernoulli"
    epochs: int = 50
    batch_size: int = 256
    learning_rate: float = 2e-3
    lr_decay: float = 0.97
    clip_norm: float = 10.0
    pretrain_epochs: int = 10
    pretrain_lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    prior: str = "gmm"
    guide: str = "marginal"
    dirichlet_concentration: float = 1.0
    global_guide: str = "map"
    temperature: float = 1.0
    temperature_decay: float = 0.93
    temperature_min: float = 0.5
    prior_temperature: float = 0.01
    label_weight: float = 300.0
    method: str = "svi"
    generator: str | None = None
    em_iterations: int = 20
    m_step_epochs: int = 1
    e_step_iterations: int = 10
    e_step_min_weight: float = 1e-4
    e_step_reg_covar: float = 1e-6
    e_step: str = "clusterddpm"
    em_lr_decay: float = 1.0
    kl_warmup_iterations: int = 0
    diffusion_steps: int = 1000
    diffusion_schedule: str = "linear"
    diffusion_width: int = 64
    latent_dropout: float = 0.1
    diffusion_weight: float = 10.0
    ddpm_pretrain: str = "autoencoder"
    diffusion_pretrain_epochs: int = 100
    pretrain_reliance: float = 0.5
    sample_steps: int = 100
    guidance: float = 0.0
    checkpoint_every_steps: int = 0
    max_bad_steps: int = 10
    lr_scaling: str = "none"
    cluster_information: float = 0.0
    kl_warmup_epochs: int = 0
    augmentation_consistency: float = 0.0
    dp_concentration: float = 1.0
    dp_learn_concentration: bool = False
    dp_settle_steps: int = 1000

    def __post_init__(self) -> None:
        check_field_types(self)
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.network not in ("mlp", "conv"):
            raise ValueError(f"network must be 'mlp' or 'conv', got {self.network!r}")
        for check in NAME_CHECKS:  # the registry's names
            check(self)
        if self.global_guide not in ("map", "mean-field"):
            raise ValueError(
                f"global_guide must be 'map' or 'mean-field', got {self.global_guide!r}"
            )
        if self.label_weight < 0:
            raise ValueError(f"label_weight must be >= 0, got {self.label_weight}")
        if not self.dirichlet_concentration > 0:
            raise ValueError(
                f"dirichlet_concentration must be positive, got {self.dirichlet_concentration}"
            )
        if not 0 < self.temperature_min <= self.temperature or not 0 < self.temperature_decay <= 1:
            raise ValueError(
                "the relaxed guide's schedule needs 0 < temperature_min <= temperature and "
                f"0 < temperature_decay <= 1, got {self.temperature_min}, {self.temperature}, "
                f"{self.temperature_decay}"
            )
        if not self.dp_concentration > 0:
            raise ValueError(f"dp_concentration must be positive, got {self.dp_concentration}")
        if self.dp_settle_steps < 0:
            raise ValueError(f"dp_settle_steps must be >= 0 (0: none), got {self.dp_settle_steps}")
        if not self.prior_temperature > 0:
            raise ValueError(f"prior_temperature must be > 0, got {self.prior_temperature}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        for name in ("latent_dim", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("epochs", "pretrain_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.learning_rate > 0 or not self.pretrain_lr > 0:
            raise ValueError("learning rates must be positive")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.lr_scaling not in ("none", "sqrt", "linear"):
            raise ValueError(
                f"lr_scaling must be 'none', 'sqrt' or 'linear', got {self.lr_scaling!r}"
            )
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must list positive layer widths, got {self.hidden}")
        if not (math.isfinite(self.learning_rate) and math.isfinite(self.pretrain_lr)):
            raise ValueError("learning rates must be finite")
        if not 0 < self.clip_norm < float("inf"):
            raise ValueError(f"clip_norm must be a positive finite number, got {self.clip_norm}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        if self.checkpoint_every_steps < 0:
            raise ValueError(
                f"checkpoint_every_steps must be >= 0 (0: after each epoch only), "
                f"got {self.checkpoint_every_steps}"
            )
        if self.cluster_information < 0:
            raise ValueError(
                f"cluster_information must be >= 0 (0: off), got {self.cluster_information}")
        if self.augmentation_consistency < 0:
            raise ValueError(f"augmentation_consistency must be >= 0 (0: off), got "
                             f"{self.augmentation_consistency}")
        if self.kl_warmup_epochs < 0:
            raise ValueError(f"kl_warmup_epochs must be >= 0 (0: off), got {self.kl_warmup_epochs}")
        if self.max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be at least 1, got {self.max_bad_steps}")
        self._check_em_settings()

    def _check_em_settings(self) -> None:
        if self.method not in ("svi", "em"):
            raise ValueError(f"method must be 'svi' or 'em', got {self.method!r}")
        if self.diffusion_schedule not in ("linear", "clusterddpm", "cosine"):
            raise ValueError(f"diffusion_schedule must be 'linear', 'clusterddpm' or 'cosine', "
                             f"got {self.diffusion_schedule!r}")
        for name in ("em_iterations", "m_step_epochs", "sample_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("e_step_iterations", "diffusion_steps", "diffusion_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.sample_steps > self.diffusion_steps:
            raise ValueError(f"sample_steps ({self.sample_steps}) cannot exceed diffusion_steps "
                             f"({self.diffusion_steps}); 0 runs all of them")
        if not 0.0 <= self.latent_dropout < 1.0:
            raise ValueError(f"latent_dropout must be in [0, 1), got {self.latent_dropout}")
        if self.ddpm_pretrain not in ("autoencoder", "diffusion"):
            raise ValueError(f"ddpm_pretrain must be 'autoencoder' or 'diffusion', got "
                             f"{self.ddpm_pretrain!r}")
        if self.diffusion_pretrain_epochs < 0:
            raise ValueError(f"diffusion_pretrain_epochs must be >= 0, got "
                             f"{self.diffusion_pretrain_epochs}")
        if not self.pretrain_reliance >= 0:
            raise ValueError(f"pretrain_reliance must be >= 0 (0: no early stop), got "
                             f"{self.pretrain_reliance}")
        if not self.diffusion_weight > 0:
            raise ValueError(f"diffusion_weight must be positive, got {self.diffusion_weight}")
        k = self.num_clusters if isinstance(self.num_clusters, int) and self.num_clusters > 0 else 1
        if not 0.0 <= self.e_step_min_weight < 1.0 / k:
            raise ValueError(f"e_step_min_weight must be in [0, 1/num_clusters), got "
                             f"{self.e_step_min_weight}")
        if self.e_step not in ("clusterddpm", "vade", "means"):
            raise ValueError(f"e_step must be 'clusterddpm', 'vade' or 'means', got "
                             f"{self.e_step!r}")
        if not 0 < self.em_lr_decay <= 1:
            raise ValueError(f"em_lr_decay must be in (0, 1], got {self.em_lr_decay}")
        if self.kl_warmup_iterations < 0:
            raise ValueError(f"kl_warmup_iterations must be >= 0, got "
                             f"{self.kl_warmup_iterations}")
        if self.method == "em" and self.prior in EM_REFUSED_PRIORS:
            raise ValueError(f"method='em' cannot fit prior={self.prior!r}: "
                             f"{EM_REFUSED_PRIORS[self.prior]}")
        if self.e_step_reg_covar < 0:
            raise ValueError(f"e_step_reg_covar must be >= 0, got {self.e_step_reg_covar}")

    @property
    def active_lr_decay(self) -> float:
        """The learning rate's factor per epoch of the chosen method: ``em_lr_decay`` for EM
        (per M-step epoch), ``lr_decay`` for SVI."""
        return self.em_lr_decay if self.method == "em" else self.lr_decay

    @property
    def generator_name(self) -> str:
        """The generator actually built: ``generator``, or ``network`` when that is None."""
        return self.generator or self.network

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitConfig:
        """Build a config, refusing keys it does not know (a typo must not pass silently)."""
        d = upgrade_legacy_keys(d)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown config keys {unknown}; valid keys are {sorted(known)}"
            )
        return cls(**d)

    def replace(self, **changes: Any) -> FitConfig:
        return FitConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> FitConfig:
        """Read a config from a JSON object file of :class:`FitConfig` fields (others default).

        Raises:
            ValueError: the file is missing, is not a JSON object, or holds unknown keys or bad
                values; the message names the file.
        """
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except OSError as err:
            raise ValueError(f"cannot read the config file {path}: {err.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"the config file {path} is not valid JSON: {err}") from None
        if not isinstance(d, dict):
            raise ValueError(
                f"the config file {path} must hold a JSON object of settings, "
                f"got a {type(d).__name__}"
            )
        try:
            return cls.from_dict(d)
        except (ValueError, TypeError) as err:
            raise ValueError(f"the config file {path}: {err}") from None


#: priors the EM loop refuses, with the reason and the fix
EM_REFUSED_PRIORS = {
    "normal": "the standard-normal prior has no mixture for the E-step to refit (its clusters "
              "are a mixture fitted to the codes after each epoch); use method='svi' with it, "
              "or prior='gmm' with method='em'",
    "bayes-gmm": "the E-step refits the mixture by closed-form maximum likelihood, which would "
                 "overwrite the Bayesian prior's posterior over the weights, means and scales; "
                 "use method='svi' with it, or prior='gmm' with method='em'",
    "dp": "the E-step refits the mixture by closed-form maximum likelihood, which would "
          "overwrite the Dirichlet-process prior's posterior over its sticks, means and scales; "
          "use method='svi' with it, or prior='gmm' with method='em'",
}


def upgrade_legacy_keys(d: dict[str, Any]) -> dict[str, Any]:
    """Map keys of configs written by older versions to today's fields: the boolean
    ``e_step_code_variance`` became ``e_step`` (True: "vade", False: "means")."""
    if "e_step_code_variance" not in d:
        return d
    d = dict(d)
    d["e_step"] = "vade" if d.pop("e_step_code_variance") else "means"
    return d


_FIELD_TYPES = {"int": (Integral, int, "an integer"), "float": (Real, float, "a number"),
                "str": (str, str, "a string"),
                "str | None": ((str, type(None)), lambda v: v, "a string or None"),
                "bool": (bool, bool, "True or False")}


def check_field_types(config: Any) -> None:
    """TypeError naming the field when a value has the wrong type (bools are not numbers);
    numpy scalars are turned into Python ones."""
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name == "hidden":
            ok = isinstance(value, (list, tuple)) and all(
                isinstance(h, Integral) and not isinstance(h, bool) for h in value
            )
            want = "a list of integers"
        else:
            kind, cast, want = _FIELD_TYPES[f.type]
            ok = isinstance(value, kind) and (f.type == "bool" or not isinstance(value, bool))
            if ok:
                setattr(config, f.name, cast(value))
        if not ok:
            raise TypeError(f"{f.name} must be {want}, got {value!r}")
