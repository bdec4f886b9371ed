"""How a fit starts before its first epoch: autoencoder pretraining, or the autoencoder of
another fit (``pretrained=``); then a Gaussian mixture fitted to the codes starts the prior
(and the guide's cluster heads), and a generator that measures it reports its latent reliance.
The same mixture fit can start them again after an SVI epoch (``mixture_restart_epoch``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from ..model.gmm import widen_by_code_scales
from ..model.mixture_fit import MIXTURE_STARTS, align_to_labels
from ..modes import evaluating
from .denoising import MaskedInput
from .persistence import FitRecord
from .prediction import encode_codes, encode_means
from .pretrain import Pretrainer
from .progress import Progress

__all__ = [
    "AUTOENCODER_KEYS",
    "LATENT_RELIANCE_WARNING",
    "autoencoder_modules",
    "init_mixture",
    "pretrain",
    "restart_mixture",
    "start_from",
    "start_mixture_at_codes",
]

log = logging.getLogger("varclust")

#: below this relative rise of the noise loss under shuffled codes, warn that a diffusion
#: generator ignores z. Calibrated on EM fits of the UCI digits (BENCHMARKS.md, issue 13): from
#: reliance 0.02 the clusters collapsed (ACC 0.29), from 0.13 they held but ACC fell to 0.72,
#: from 0.27 / 0.48 / 0.76 ACC was 0.79 / 0.80 / 0.81.
LATENT_RELIANCE_WARNING = 0.25

#: settings a fit must share with the one whose autoencoder it starts from (``pretrained=``)
AUTOENCODER_KEYS = ("latent_dim", "network", "hidden", "likelihood", "generator_name")


def autoencoder_modules(fit: FitRecord) -> list[nn.Module]:
    """What autoencoder pretraining trains: the guide's encoder and the generator's modules."""
    return [fit.guide.encoder, *fit.model.generator_modules()]


def pretrain(
    fit: FitRecord, x: Tensor, show: Progress, own_pretraining: Callable[..., list[float]] | None,
    distributed: Any = None, supervision: dict | None = None,
    save: Callable[[dict], None] | None = None, resume: dict | None = None,
) -> None:
    """Autoencoder pretraining on data x (N, ...), then :func:`init_mixture`.

    The model's ``pretraining_loss`` is minimised by :class:`Pretrainer`, ``save(state)``
    checkpointing it after every epoch and every ``checkpoint_every_steps`` batches, ``resume``
    such a state to continue from; a generator with its own pretraining (``own_pretraining``,
    :class:`varclust.registry.GeneratorEntry`) runs that instead.
    """
    c = fit.config
    if own_pretraining is not None and c.pretrain_masking:
        raise ValueError(
            f"pretrain_masking={c.pretrain_masking} applies to autoencoder pretraining, and "
            f"the generator {c.generator_name!r} pretrains its own way; set pretrain_masking=0"
        )
    dist_kw = dict(batches=distributed.batches, wrap=distributed.wrap) if distributed else {}
    encoder = MaskedInput(fit.guide.encoder, c.pretrain_masking)
    pretrainer = Pretrainer(fit.model.pretraining_loss(encoder), c.pretrain_lr,
                            c.pretraining_batch, c.seed, **dist_kw)
    if resume is not None:
        pretrainer.load_state_dict(resume)
    bar = show.bar(total=c.pretrain_epochs, initial=pretrainer.epoch, desc="pretrain",
                   unit="epoch")

    def on_epoch(epoch: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.2f}")
        show.line("pretrain epoch", epoch + 1, c.pretrain_epochs, {"loss": loss})

    if own_pretraining is not None:  # e.g. the diffusion generator's two stages
        fit.pretrain_losses = own_pretraining(fit.model, fit.guide, x, c, on_epoch, bar,
                                              dist_kw)
    else:
        def checkpoint(state: dict) -> None:
            fit.pretrain_losses = list(pretrainer.losses)
            if save is not None:
                save(state)

        fit.pretrain_losses = list(pretrainer.run(
            x, c.pretrain_epochs, on_epoch, checkpoint, c.checkpoint_every_steps))
    bar.close()
    init_mixture(fit, x, supervision)


def start_from(fit: FitRecord, source: FitRecord, x: Tensor, supervision: dict | None) -> None:
    """Copy the autoencoder of another fit ``source`` instead of pretraining, then
    :func:`init_mixture`. It must have the same :data:`AUTOENCODER_KEYS` and data shape."""
    diffs = [f"{k}: pretrained {getattr(source.config, k)!r} vs {getattr(fit.config, k)!r}"
             for k in AUTOENCODER_KEYS
             if getattr(source.config, k) != getattr(fit.config, k)]
    if tuple(source.data_shape) != tuple(x.shape[1:]):
        diffs.append(f"data shape: pretrained {tuple(source.data_shape)} vs "
                     f"{tuple(x.shape[1:])}")
    if diffs:
        raise ValueError(
            f"the pretrained fit has other networks ({'; '.join(diffs)}), so its "
            "autoencoder cannot start this fit; pretrain one with the same settings"
        )
    for mine, theirs in zip(autoencoder_modules(fit), autoencoder_modules(source)):
        mine.load_state_dict(theirs.state_dict())
    fit.pretrain_losses = list(source.pretrain_losses)
    init_mixture(fit, x, supervision)


def init_mixture(fit: FitRecord, x: Tensor, supervision: dict | None) -> None:
    """Fit a GaussianMixture to the codes of x (N, ...) and start the prior and the guide's
    cluster heads at it (:func:`start_mixture_at_codes`); q(z | x) starts narrow beside the
    components."""
    codes = encode_means(fit.guide, x)
    check_latent_reliance(fit, x[:512], codes[:512])
    scale = start_mixture_at_codes(fit, codes, supervision)
    fit.guide.set_initial_code_scale(0.1 * float(scale.median()))


def restart_mixture(fit: FitRecord, x: Tensor, supervision: dict | None) -> None:
    """``mixture_restart_epoch``'s move: the prior and the guide's cluster heads start again
    at a mixture fitted to the means of q(z | x) of x (N, ...) under the guide in eval mode
    (its mode is restored after), as :func:`start_mixture_at_codes` does, with the components
    widened by the codes' own scales (:func:`~varclust.model.gmm.widen_by_code_scales`:
    q(z | x) is not narrowed here as after pretraining). The networks keep what they learned."""
    with evaluating(fit.guide):
        code_loc, code_scale = encode_codes(fit.guide, x)
    start_mixture_at_codes(fit, code_loc, supervision, code_scale)


def start_mixture_at_codes(fit: FitRecord, codes: Tensor, supervision: dict | None,
                           code_scale: Tensor | None = None) -> Tensor:
    """Fit a GaussianMixture to codes (N, D) (as ``mixture_start`` says:
    :data:`~varclust.model.mixture_fit.MIXTURE_STARTS`) and set the prior and the guide's
    cluster heads to it. Semi-supervised (``supervision``): the components are first matched
    to the labels; otherwise they are put in the prior's
    :meth:`~varclust.model.priors.MixturePrior.component_order`. Prior and guide get the same
    order: prior component k is the guide's cluster k. With ``code_scale`` (N, D), the scales
    of q(z | x) about the codes, the components are widened by them
    (:func:`~varclust.model.gmm.widen_by_code_scales`).

    Returns:
        The components' scales (K, D).
    """
    c = fit.config
    weights, loc, scale = MIXTURE_STARTS[c.mixture_start](codes, c.num_clusters, c.seed)
    if code_scale is not None:
        scale = widen_by_code_scales(weights, loc, scale, codes.cpu(), code_scale.cpu())
    if supervision:
        weights, loc, scale = align_to_labels(weights, loc, scale, codes, **supervision)
    else:
        order = fit.model.prior.component_order(weights)
        weights, loc, scale = weights[order], loc[order], scale[order]
    fit.model.prior.set_mixture(weights, loc, scale)
    fit.model.prior.settle_on_codes(codes, c.seed)
    fit.guide.init_from_mixture(weights, loc, scale)
    return scale


def check_latent_reliance(fit: FitRecord, x: Tensor, codes: Tensor) -> None:
    """Record ``fit.latent_reliance`` of the model on data x (B, ...) with their codes (B, D)
    and warn when the generator hardly uses them (the EM/SVI fit would collapse them)."""
    fit.latent_reliance = fit.model.latent_reliance(x, codes, fit.config.seed)
    if fit.latent_reliance is not None and fit.latent_reliance < LATENT_RELIANCE_WARNING:
        log.warning(
            "the pretrained diffusion generator hardly uses the codes (noise loss %+.2f%% "
            "with another datum's code, below %.0f%%): the prior term will then pull the "
            "codes together and clusters merge or collapse. Pretrain longer "
            "(diffusion_pretrain_epochs or pretrain_epochs, pretrain_reliance), widen the "
            "U-Net (diffusion_width) or raise diffusion_weight.",
            100 * fit.latent_reliance, 100 * LATENT_RELIANCE_WARNING)
