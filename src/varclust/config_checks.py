"""Checks of a settings dataclass, with errors that name the field and the fix (used by
:class:`varclust.config.FitConfig`): each field's type and fixed choices (generic), and the
settings of the terms outside the ELBO with their KL warm-up."""

from __future__ import annotations

from dataclasses import fields
from numbers import Integral, Real
from typing import Any

__all__ = ["REVIVAL_REFUSED_PRIORS", "check_choices", "check_field_types",
           "check_moves_outside_elbo", "check_terms_outside_elbo"]

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


def check_choices(config: Any) -> None:
    """ValueError naming the field and its choices when a value is not among the ``choices``
    of its :func:`setting`."""
    for f in fields(config):
        choices, value = f.metadata.get("choices"), getattr(config, f.name)
        if choices and value not in choices:
            named = ", ".join(map(repr, choices[:-1])) + f" or {choices[-1]!r}"
            raise ValueError(f"{f.name} must be {named}, got {value!r}")


def check_terms_outside_elbo(config: Any) -> None:
    """ValueError for a negative weight of a term outside the ELBO or warm-up length, a
    non-positive adversarial radius or a negative radius scale, fewer than one neighbour (two
    for UMAP's graph), or ``warm_up_terms`` without a KL warm-up of the method that runs
    (``kl_warmup_iterations`` in EM, else epochs), or a UMAP graph built at an epoch the fit
    does not reach, or a consensus weight without its targets' file or the reverse. A term's
    own parameters (``neighbours``, ``umap_neighbours``,
    ``umap_graph_epoch``, ``adversarial_radius``, ``adversarial_radius_scale``,
    ``cluster_balance``) are inert while its weight is 0, so a recipe's values survive a typed
    0."""
    for name in ("cluster_information", "augmentation_consistency", "virtual_adversarial",
                 "neighbour_consistency", "umap_graph", "consensus_targets",
                 "kl_warmup_epochs"):  # 0 turns one off
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0 (0: off), got {getattr(config, name)}")
    warmup = "kl_warmup_iterations" if config.method == "em" else "kl_warmup_epochs"
    if config.warm_up_terms and not getattr(config, warmup):
        raise ValueError(f"warm_up_terms scales the terms outside the ELBO by the KL warm-up's "
                         f"weight, but {warmup} is 0 (no warm-up): set {warmup} > 0 or leave "
                         "warm_up_terms off")
    if bool(config.consensus_targets) != bool(config.consensus_file):
        raise ValueError("consensus_targets (the weight) and consensus_file (the targets) go "
                         "together: fit_restarts(consensus=w) / --consensus W sets both, or set "
                         f"both yourself; got {config.consensus_targets}, "
                         f"{config.consensus_file!r}")
    if not config.adversarial_radius > 0:
        raise ValueError(f"adversarial_radius must be > 0, got {config.adversarial_radius}")
    if config.adversarial_radius_scale < 0:
        raise ValueError(f"adversarial_radius_scale must be >= 0 (0: the fixed "
                         f"adversarial_radius), got {config.adversarial_radius_scale}")
    if config.neighbours < 1:
        raise ValueError(f"neighbours must be >= 1, got {config.neighbours}")
    if config.umap_neighbours < 2:
        raise ValueError(f"umap_neighbours must be >= 2 (UMAP's graph counts the datum "
                         f"itself among them), got {config.umap_neighbours}")
    if config.umap_graph_epoch < 0:
        raise ValueError(f"umap_graph_epoch must be >= 0 (0: as SVI starts), got "
                         f"{config.umap_graph_epoch}")
    if config.umap_graph and config.umap_graph_epoch and config.method == "em":
        raise ValueError("umap_graph_epoch counts SVI epochs; with method='em' UMAP's graph is "
                         "built as training starts: leave umap_graph_epoch at 0")
    if config.umap_graph and config.umap_graph_epoch >= max(config.epochs, 1):
        raise ValueError(f"umap_graph_epoch {config.umap_graph_epoch} is past the fit's last "
                         f"SVI epoch (epochs={config.epochs}), so the graph would never act: "
                         "set umap_graph_epoch < epochs")


#: priors that revive_clusters refuses, with the reason and the fix
REVIVAL_REFUSED_PRIORS = {
    "normal": "its clusters are a mixture refitted to the codes after every epoch, not "
              "parameters a split could move; use prior='gmm'",
    "dp": "switching unused clusters off is what the Dirichlet process is for; use prior='gmm' "
          "(or 'bayes-gmm') with a fixed K to keep every cluster in use",
}
REVIVAL_REFUSED_PRIORS["dp-full"] = REVIVAL_REFUSED_PRIORS["dp"]  # the same Dirichlet process


def check_moves_outside_elbo(config: Any) -> None:
    """ValueError for a revival fraction outside [0, 1/K) or on a prior that refuses it, or a
    mixture restart after the last epoch or under EM."""
    if not 0.0 <= config.revive_clusters < 1.0 / max(1, config.num_clusters):
        raise ValueError(f"revive_clusters must be in [0, 1/num_clusters) (0: off), got "
                         f"{config.revive_clusters}")
    if config.revive_clusters and config.prior in REVIVAL_REFUSED_PRIORS:
        raise ValueError(f"revive_clusters cannot act on prior={config.prior!r}: "
                         f"{REVIVAL_REFUSED_PRIORS[config.prior]}")
    if not 0 <= config.mixture_restart_epoch <= config.epochs:
        raise ValueError(f"mixture_restart_epoch must be in [0, epochs={config.epochs}] (0: "
                         f"never), got {config.mixture_restart_epoch}")
    if config.mixture_restart_epoch and config.method == "em":
        raise ValueError("mixture_restart_epoch is an SVI setting: EM's E-step refits the "
                         "mixture every iteration already; set it to 0 with method='em'")


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
    "dp-full": "the E-step refits a diagonal mixture by closed-form maximum likelihood, which "
               "would overwrite the Dirichlet-process prior's posterior over its sticks, means "
               "and precisions; use method='svi' with it, or prior='gmm' with method='em'",
    "gmm-full": "the E-steps refit a diagonal mixture, which would leave the full covariances "
                "at their start; use method='svi' with it, or prior='gmm' with method='em'",
}


def check_em_settings(config: Any) -> None:
    """ValueError for an EM or diffusion setting out of its range, guidance without a
    trained unconditional prediction, or a prior the EM loop cannot fit."""
    for name in ("em_iterations", "m_step_epochs", "sample_steps"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")
    for name in ("e_step_iterations", "diffusion_steps", "diffusion_width"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.sample_steps > config.diffusion_steps:
        raise ValueError(f"sample_steps ({config.sample_steps}) cannot exceed diffusion_steps "
                         f"({config.diffusion_steps}); 0 runs all of them")
    if not 0.0 <= config.latent_dropout < 1.0:
        raise ValueError(f"latent_dropout must be in [0, 1), got {config.latent_dropout}")
    if config.diffusion_pretrain_epochs < 0:
        raise ValueError(f"diffusion_pretrain_epochs must be >= 0, got "
                         f"{config.diffusion_pretrain_epochs}")
    if not config.pretrain_reliance >= 0:
        raise ValueError(f"pretrain_reliance must be >= 0 (0: no early stop), got "
                         f"{config.pretrain_reliance}")
    if not config.diffusion_weight > 0:
        raise ValueError(f"diffusion_weight must be positive, got {config.diffusion_weight}")
    k = config.num_clusters
    k = k if isinstance(k, int) and k > 0 else 1
    if not 0.0 <= config.e_step_min_weight < 1.0 / k:
        raise ValueError(f"e_step_min_weight must be in [0, 1/num_clusters), got "
                         f"{config.e_step_min_weight}")
    if not 0 < config.em_lr_decay <= 1:
        raise ValueError(f"em_lr_decay must be in (0, 1], got {config.em_lr_decay}")
    if config.kl_warmup_iterations < 0:
        raise ValueError(f"kl_warmup_iterations must be >= 0, got "
                         f"{config.kl_warmup_iterations}")
    if config.guidance != 0 and config.latent_dropout == 0:
        raise ValueError("guidance needs latent_dropout > 0: the unconditional prediction it "
                         "mixes in is trained only on dropped latents")
    if config.method == "em" and config.prior in EM_REFUSED_PRIORS:
        raise ValueError(f"method='em' cannot fit prior={config.prior!r}: "
                         f"{EM_REFUSED_PRIORS[config.prior]}")
    if config.e_step_reg_covar < 0:
        raise ValueError(f"e_step_reg_covar must be >= 0, got {config.e_step_reg_covar}")
