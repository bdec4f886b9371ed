"""Pretraining of a diffusion generator p(x | z) and the encoder, until the generator relies on
the codes (:meth:`~varclust.model.diffusion.ConditionalDDPM.latent_reliance`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from ..model.likelihoods import Likelihood
from .em import frozen
from .init import pretrain_autoencoder, pretrain_diffusion_autoencoder, reliance_reached

__all__ = ["RELIANCE_CHECK_EVERY", "pretrain_diffusion_generator"]

log = logging.getLogger("varclust")

#: epochs between two measurements of the latent reliance in diffusion pretraining
RELIANCE_CHECK_EVERY = 5


def pretrain_diffusion_generator(
    encoder: nn.Module, generator: nn.Module, x: Tensor, config: Any,
    on_epoch: Callable[[int, float], None], bar: Any, dist_kw: dict,
    temporary_autoencoder: Callable[[], tuple[nn.Module, Likelihood]],
) -> list[float]:
    """Pretrain the diffusion generator and the encoder on data x (N, C, H, W), as
    ``config.ddpm_pretrain`` says:

    - "autoencoder": ``pretrain_epochs`` of a plain autoencoder (the encoder with the decoder
      and likelihood of ``temporary_autoencoder()``, discarded afterwards), so the codes
      cluster; then the generator alone (encoder frozen) on those codes, for at most
      ``diffusion_pretrain_epochs``.
    - "diffusion": ClusterDDPM's: encoder and generator as a diffusion autoencoder, for at most
      ``pretrain_epochs``.

    The diffusion stage stops once ``latent_reliance`` on the first 512 images reaches
    ``pretrain_reliance`` (measured every :data:`RELIANCE_CHECK_EVERY` epochs; 0: never).
    ``on_epoch(epoch, loss)`` sees every epoch, ``bar`` (a progress bar) the reliance.
    Returns the losses of every epoch of both stages.
    """
    c = config

    def measured(epoch: int, reliance: float) -> None:
        bar.set_postfix(reliance=f"{reliance:.3f}")
        log.info("diffusion pretraining epoch %d: latent reliance %.4f", epoch + 1, reliance)

    stop = None
    if c.pretrain_reliance > 0:
        stop = reliance_reached(encoder, generator, x[:512], c.pretrain_reliance,
                                RELIANCE_CHECK_EVERY, c.seed, measured)
    if c.ddpm_pretrain == "diffusion":
        return pretrain_diffusion_autoencoder(
            encoder, generator, x, c.pretrain_epochs, c.pretraining_batch, c.pretrain_lr, c.seed,
            on_epoch, stop=stop, **dist_kw)
    decoder, likelihood = temporary_autoencoder()
    losses = pretrain_autoencoder(encoder, decoder, likelihood, x, c.pretrain_epochs,
                                  c.pretraining_batch, c.pretrain_lr, c.seed, on_epoch, **dist_kw)
    bar.total = c.pretrain_epochs + c.diffusion_pretrain_epochs
    with frozen(encoder):
        losses += pretrain_diffusion_autoencoder(
            encoder, generator, x, c.diffusion_pretrain_epochs, c.pretraining_batch, c.pretrain_lr,
            c.seed + 1, on_epoch, stop=stop, **dist_kw)
    return losses
