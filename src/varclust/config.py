"""The configuration of a fit: what the model is and how it is trained."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .config_checks import (
    check_choices,
    check_em_settings,
    check_field_types,
    check_moves_outside_elbo,
    check_terms_outside_elbo,
)

__all__ = ["FitConfig", "NAME_CHECKS", "PRECISIONS", "STRUCTURAL_KEYS"]

#: checks of the names of registered components (prior, guide, likelihood, generator), each
#: ``check(config)`` raising ValueError; :mod:`varclust.registry` adds its own when imported
#: (the registry imports this module, never the other way round)
NAME_CHECKS: list[Callable[[Any], None]] = []

#: keys that fix the shapes of parameters: a checkpoint only loads into a model that agrees on them
STRUCTURAL_KEYS = ("num_clusters", "latent_dim", "network", "hidden", "likelihood", "generator",
                   "diffusion_width")
#: keys of the swappable components (issue 3); they fix parameter shapes too
STRUCTURAL_KEYS += ("prior", "guide", "global_guide")

#: the networks' arithmetic (:mod:`varclust.model.precision`)
PRECISIONS = ("float32", "bfloat16")


SCRATCH = "relaxed guide and training from scratch"
EM = "EM and generator (ClusterDDPM)"


def setting(default: Any, help: str, *, flag: str | None = "", choices: tuple | None = None,
            group: str | None = None) -> Any:
    """A :class:`FitConfig` field that carries its command line: ``help`` (argparse's, may
    hold ``%(default)s``), ``flag`` ("": ``--`` and the name with dashes; None: no flag of its
    own), fixed ``choices`` and the help ``group`` (None: the command's own options)."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices,
                                            "group": group})


@dataclass
class FitConfig:
    """Every setting of a fit, each field with its help (``fields(FitConfig)[i].metadata``,
    shown by ``varclust fit --help``, whose flags are built from them). Defaults follow VaDE
    (MLP 500-500-2000, D=10, Adam 2e-3). The components (``prior``, ``guide``, ``likelihood``,
    ``generator``) are names of :mod:`varclust.registry` ("custom" when an object was given).

    Training: autoencoder pretraining (``pretrain_epochs``), a GaussianMixture fitted to the
    codes starts the prior, then ``epochs`` of SVI; or with ``method="em"`` (ClusterDDPM's
    loop; ``epochs`` unused) ``em_iterations`` of ``m_step_epochs`` SVI epochs on the networks
    (prior frozen) each followed by a closed-form E-step (:data:`varclust.inference.em.E_STEPS`).
    The diffusion generator (:mod:`varclust.model.diffusion`) takes the
    ``diffusion_*`` settings, ``sample_steps`` and ``guidance``. From scratch
    (``pretrain_epochs=0``): the terms outside the ELBO of :mod:`varclust.inference.regularisers`
    and the KL warm-up. The Dirichlet process (``prior="dp"``, or ``"dp-full"`` with full
    covariances): ``num_clusters`` is the truncation, ``dp_*`` its settings.
    """

    num_clusters: int = setting(10, "K, the number of clusters (dp: the truncation)",
                                flag="--clusters")
    latent_dim: int = setting(10, "D, the dimension of the codes z")
    network: str = setting("mlp", "the encoder (and the decoder unless --generator); conv takes "
                           "28x28 or 32x32 images", choices=("mlp", "conv"))
    hidden: tuple[int, ...] = setting((500, 500, 2000),
                                      "encoder widths, mirrored by the decoder")
    likelihood: str = setting("bernoulli", "p(x|z) of the decoder's output")
    epochs: int = setting(50, "SVI epochs")
    batch_size: int = setting(256, "default: %(default)s; the mini-batch (the global batch "
                              "under --distributed)")
    learning_rate: float = setting(2e-3, "Adam learning rate", flag="--lr")
    lr_decay: float = setting(0.97, "the learning rate's factor per SVI epoch (--lr-decay)",
                              flag=None)
    lr_decay_from: int = setting(0, "SVI: F of the learning rate lr * lr_decay^max(0, e - F) "
                                 "at epoch e (constant to epoch F, then decaying)")
    clip_norm: float = setting(10.0, "gradients clipped to this norm")
    pretrain_epochs: int = setting(10, "autoencoder epochs before the mixture is fitted")
    pretrain_lr: float = setting(1e-3, "the autoencoder pretraining's learning rate")
    pretrain_batch_size: int = setting(0, "pretraining's mini-batch (0: --batch-size)")
    pretrain_masking: float = setting(0.0, "denoising pretraining: each input pixel is set to 0 "
                                      "with this probability in the encoder's input while the "
                                      "autoencoder pretrains; the decoder reconstructs the clean "
                                      "image (0: off; pretraining only, not part of the ELBO)")
    mixture_start: str = setting("codes", "how the mixture is fitted to the codes after "
                                 "pretraining and at --mixture-restart-epoch: codes (a "
                                 "diagonal GaussianMixture on the codes); umap (N2D: a "
                                 "GaussianMixture on a UMAP embedding of the codes chooses the "
                                 "clusters, which start the components; needs umap-learn); "
                                 "merged (a full-covariance GaussianMixture with 2K components "
                                 "whose components spectral clustering groups into K clusters); "
                                 "merged-refined (merged, then EM of K full-covariance "
                                 "Gaussians from the merged clusters); split-merge "
                                 "(merged-refined, then split-and-merge EM: merge two "
                                 "components, split a third, keep the move if the likelihood "
                                 "rises)",
                                 choices=("codes", "umap", "merged", "merged-refined",
                                          "split-merge"))
    seed: int = setting(0, "seeds every random draw")
    device: str = setting("auto", "auto, cpu or cuda")
    precision: str = setting("float32", "bfloat16: the networks under bfloat16 autocast (speed; "
                             "results differ slightly; outputs, parameters and ELBO stay "
                             "float32; the U-Net is bfloat16 on CUDA either way)",
                             choices=PRECISIONS)
    prior: str = setting("gmm", "gmm (learned mixture), gmm-full (learned mixture, full "
                         "covariances), normal (plain VAE + mixture fitted to the codes), "
                         "bayes-gmm (Dirichlet/Normal/LogNormal priors on the mixture), dp "
                         "(Dirichlet process: --clusters is the truncation, unused clusters "
                         "switch off), dp-full (dp with full covariances)")
    guide: str = setting("marginal", "marginal q(z|x), mixture q(c|x)q(z|x,c), relaxed "
                         "(Gumbel-softmax)")
    dirichlet_concentration: float = setting(
        1.0, "bayes-gmm: Dirichlet concentration per cluster (< 1 is sparse)",
        flag="--concentration")
    global_guide: str = setting("map", "bayes-gmm: guide of the mixture's weights, means and "
                                "scales", choices=("map", "mean-field"))
    temperature: float = setting(1.0, "relaxed guide: the Concrete temperature T0 of the first "
                                 "epoch", group=SCRATCH)
    temperature_decay: float = setting(0.93, "relaxed guide: per-epoch factor of the "
                                       "temperature, T_e = max(T_min, T0 * decay^e)",
                                       group=SCRATCH)
    temperature_min: float = setting(0.5, "relaxed guide: the temperature's floor",
                                     group=SCRATCH)
    prior_temperature: float = setting(0.01, "relaxed model: the fixed temperature of p(w)",
                                       group=SCRATCH)
    label_weight: float = setting(300.0, "semi-supervised: alpha of alpha * log p(c = label "
                                  "| z) for the labelled data")
    method: str = setting("svi", "svi: joint SVI; em: M-steps with the prior frozen + "
                          "closed-form E-steps", choices=("svi", "em"), group=EM)
    generator: str | None = setting(None, "p(x|z): a decoder or the conditional diffusion model "
                                    "(default: the --network decoder)", group=EM)
    em_iterations: int = setting(20, "EM iterations", group=EM)
    m_step_epochs: int = setting(1, "SVI epochs of each M-step", group=EM)
    e_step_iterations: int = setting(10, "closed-form E-steps (vade, means): EM steps on the "
                                     "codes", group=EM)
    e_step_min_weight: float = setting(1e-4, "E-step: the floor of a component's weight",
                                       group=EM)
    e_step_reg_covar: float = setting(1e-6, "E-step: added to every variance", group=EM)
    e_step: str = setting("clusterddpm", "clusterddpm: scikit-learn's GaussianMixture refitted "
                          "to convergence on codes sampled from q, warm-started (ClusterDDPM); "
                          "vade: closed form with q's variances (VaDE's bound, never "
                          "decreasing); means: q's means only",
                          choices=("clusterddpm", "vade", "means"), group=EM)
    em_lr_decay: float = setting(1.0, "the learning rate's factor per M-step epoch (1: "
                                 "constant, as ClusterDDPM; --lr-decay)", flag=None)
    kl_warmup_iterations: int = setting(0, "EM iterations over which the M-step's KL weight "
                                        "rises to 1", flag="--kl-warmup", group=EM)
    diffusion_steps: int = setting(1000, "diffusion generator: T, its noise steps", group=EM)
    diffusion_schedule: str = setting("linear", "linear: betas 1e-4..0.02 scaled by 1000/T; "
                                      "clusterddpm: 1e-4..0.02 at any T (ClusterDDPM); cosine",
                                      choices=("linear", "clusterddpm", "cosine"), group=EM)
    diffusion_width: int = setting(64, "U-Net base width", group=EM)
    latent_dropout: float = setting(0.1, "diffusion generator: probability of dropping z in "
                                    "training (classifier-free guidance)", group=EM)
    diffusion_weight: float = setting(10.0, "the noise loss's weight against the KL (10: "
                                      "ClusterDDPM's 1 : 0.1)", group=EM)
    ddpm_pretrain: str = setting("autoencoder", "autoencoder: a plain autoencoder, then the "
                                 "generator on its frozen codes; diffusion: both as a diffusion "
                                 "autoencoder (ClusterDDPM)",
                                 choices=("autoencoder", "diffusion"), group=EM)
    diffusion_pretrain_epochs: int = setting(100, "autoencoder pretraining: the most epochs of "
                                             "the generator stage", group=EM)
    pretrain_reliance: float = setting(0.8, "end the diffusion pretraining once the "
                                       "generator's latent reliance reaches this (0: run all "
                                       "its epochs)", group=EM)
    sample_steps: int = setting(100, "diffusion sampling: strided steps, 0 for the full "
                                "ancestral chain", group=EM)
    guidance: float = setting(0.0, "diffusion sampling: classifier-free guidance w", group=EM)
    checkpoint_every_steps: int = setting(0, "also checkpoint every N mini-batches inside an "
                                          "epoch (0: per epoch; EM: in pretraining, its "
                                          "iterations per iteration)", flag="--checkpoint-every")
    max_bad_steps: int = setting(10, "stop after this many steps in a row with a non-finite "
                                 "loss")
    lr_scaling: str = setting("none", "scale --lr from batch 256 to --batch-size (large "
                              "batches)", choices=("none", "sqrt", "linear"))
    cluster_information: float = setting(0.0, "lambda of lambda * N * I_q(c; x), a term "
                                         "outside the ELBO", group=SCRATCH)
    cluster_balance: float = setting(1.0, "mu of the cluster information's marginal entropy: "
                                     "lambda N [mu H(c) - H(c|x)] (1: I_q(c; x); IMSAT's loss: "
                                     "4; 0: confidence alone, for prior=dp)", group=SCRATCH)
    kl_warmup_epochs: int = setting(0, "scale the latent terms of the ELBO up from 1/E to 1 "
                                    "over E epochs", group=SCRATCH)
    warm_up_terms: bool = setting(False, "scale the terms outside the ELBO by the KL "
                                  "warm-up's weight too, so they grow with the KL while the "
                                  "codes form", group=SCRATCH)
    augmentation_consistency: float = setting(0.0, "gamma of gamma * N * KL(q(c|x) || "
                                              "q(c|shifted x)), outside the ELBO (images only)",
                                              group=SCRATCH)
    virtual_adversarial: float = setting(0.0, "eta of eta * N * KL(q(c|x) || q(c|x + r_adv)), "
                                         "virtual adversarial smoothing outside the ELBO",
                                         group=SCRATCH)
    adversarial_radius: float = setting(0.35, "L2 radius of the virtual adversarial "
                                        "perturbation, in the data's units", group=SCRATCH)
    adversarial_radius_scale: float = setting(0.0, "alpha > 0: each datum's radius alpha x its "
                                              "10th-neighbour distance (IMSAT: 0.25); 0: "
                                              "--adversarial-radius", group=SCRATCH)
    neighbour_consistency: float = setting(0.0, "nu of nu * N * KL(q(c|x) || q(c|x')), x' one "
                                           "of x's nearest neighbours in the data, outside "
                                           "the ELBO", group=SCRATCH)
    neighbours: int = setting(5, "k: x' is one of x's k nearest neighbours", group=SCRATCH)
    umap_graph: float = setting(0.0, "w of w * N * UMAP's cross-entropy of the codes on the "
                                "fuzzy graph of the codes at the start of SVI or of "
                                "umap_graph_epoch (needs trained codes and umap-learn), "
                                "outside the ELBO")
    consensus_targets: float = setting(0.0, "w of w * N * KL(t_n || q(c|x_n)), t the consensus "
                                       "of earlier fits, outside the ELBO (set by --restarts R "
                                       "--consensus W)", flag=None, group=SCRATCH)
    consensus_file: str | None = setting(None, "the (N, K) .npy of those targets, rows in the "
                                         "data's order", flag=None)
    umap_neighbours: int = setting(20, "the nearest neighbours of UMAP's graph (--umap-graph)")
    umap_graph_epoch: int = setting(0, "the SVI epoch at whose start UMAP's graph of the codes "
                                    "is built (0: as SVI starts; from scratch >= 1: the codes "
                                    "the fit has learnt by then)")
    fit_mixture_at_start: bool = setting(False, "with pretrain_epochs=0: start the mixture and "
                                         "the guide's cluster head at a GaussianMixture of the "
                                         "untrained encoder's codes", group=SCRATCH)
    mixture_restart_epoch: int = setting(0, "SVI: after this epoch (1-based; 0: never) the "
                                         "mixture and the guide's cluster heads start again "
                                         "at a mixture fitted to the codes as --mixture-start "
                                         "says (umap: N2D's partition), a move outside the "
                                         "ELBO", group=SCRATCH)
    revive_clusters: float = setting(0.0, "after each epoch from the KL warm-up's last (EM: "
                                     "iteration), a cluster holding less than this fraction of "
                                     "the data takes half of the largest (split by a "
                                     "GaussianMixture of its codes), a move outside the ELBO; "
                                     "0: off", group=SCRATCH)
    dp_concentration: float = setting(1.0, "dp: concentration alpha of the sticks Beta(1, "
                                      "alpha) (small: few clusters)")
    dp_learn_concentration: bool = setting(False, "dp: a Gamma hyperprior on alpha (mean "
                                           "--dp-concentration), learned")
    dp_scale_pseudo_count: float = setting(1.0, "dp: nu, the Gamma prior's pseudo-data on the "
                                           "precisions (dp-full: the Wishart's, nu D degrees of "
                                           "freedom) (1: scikit-learn's; larger: fewer, "
                                           "broader clusters)")
    dp_settle_steps: int = setting(1000, "dp: SVI steps of the prior alone on the pretrained "
                                   "codes (0: none)")
    dp_epoch_settle_steps: int = setting(200, "dp: SVI steps of the prior alone on the codes "
                                         "after every epoch, so that the weights follow the "
                                         "codes (0: none)")
    dp_epoch_settle_on: str = setting("draws", "dp: the codes the epoch's settling fits: "
                                      "draws (one z ~ q(z|x) a datum, a step on the ELBO) or "
                                      "means (E[z|x]: to choose K; fewer clusters, a lower ELBO)",
                                      choices=("draws", "means"))

    def __post_init__(self) -> None:
        check_field_types(self)
        check_choices(self)
        self.hidden = tuple(int(h) for h in self.hidden)
        for check in NAME_CHECKS:  # the registry's names
            check(self)
        if not 0 < self.temperature_min <= self.temperature or not 0 < self.temperature_decay <= 1:
            raise ValueError(
                "the relaxed guide's schedule needs 0 < temperature_min <= temperature and "
                f"0 < temperature_decay <= 1, got {self.temperature_min}, {self.temperature}, "
                f"{self.temperature_decay}"
            )
        for name in ("dp_concentration", "dp_scale_pseudo_count", "dirichlet_concentration"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.prior_temperature > 0:
            raise ValueError(f"prior_temperature must be > 0, got {self.prior_temperature}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.pretrain_batch_size < 0:
            raise ValueError(f"pretrain_batch_size must be >= 0 (0: batch_size), got "
                             f"{self.pretrain_batch_size}")
        if not 0.0 <= self.pretrain_masking < 1.0:
            raise ValueError(f"pretrain_masking must be in [0, 1) (0: off), got "
                             f"{self.pretrain_masking}")
        for name in ("latent_dim", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("epochs", "pretrain_epochs", "lr_decay_from", "label_weight",
                     "cluster_balance", "dp_settle_steps", "dp_epoch_settle_steps"):
            if not getattr(self, name) >= 0:  # 0: none (cluster_balance: confidence alone)
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.learning_rate > 0 or not self.pretrain_lr > 0:
            raise ValueError("learning rates must be positive")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
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
        check_terms_outside_elbo(self)
        check_moves_outside_elbo(self)
        if self.max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be at least 1, got {self.max_bad_steps}")
        check_em_settings(self)

    @property
    def active_lr_decay(self) -> float:
        """The learning rate's factor per epoch of the chosen method: ``em_lr_decay`` for EM
        (per M-step epoch), ``lr_decay`` for SVI."""
        return self.em_lr_decay if self.method == "em" else self.lr_decay

    @property
    def active_lr_decay_from(self) -> int:
        """The first epoch whose end decays the learning rate: ``lr_decay_from`` for SVI, 0
        for EM (its ``em_lr_decay`` acts from the first M-step)."""
        return 0 if self.method == "em" else self.lr_decay_from

    @property
    def pretraining_batch(self) -> int:
        """The mini-batch of autoencoder pretraining: ``pretrain_batch_size``, else
        ``batch_size``."""
        return self.pretrain_batch_size or self.batch_size

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


def upgrade_legacy_keys(d: dict[str, Any]) -> dict[str, Any]:
    """Map keys of configs written by older versions to today's fields: the boolean
    ``e_step_code_variance`` became ``e_step`` (True: "vade", False: "means")."""
    if "e_step_code_variance" not in d:
        return d
    d = dict(d)
    d["e_step"] = "vade" if d.pop("e_step_code_variance") else "means"
    return d
