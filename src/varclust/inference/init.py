"""Initialisation: autoencoder pretraining, then a Gaussian mixture fitted to the codes."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from ..model.likelihoods import Likelihood
from ..model.pretraining_losses import AutoencoderLoss, DiffusionAutoencoderLoss
from ..modes import evaluating
from .batching import epoch_batches

__all__ = [
    "AutoencoderLoss",
    "DiffusionAutoencoderLoss",
    "minimise_over_epochs",
    "pretrain_autoencoder",
    "pretrain_diffusion_autoencoder",
    "reliance_reached",
]

Batches = Callable[[int, int, int, int, torch.device], Iterable[Tensor]]


def pretrain_autoencoder(
    encoder: nn.Module,
    decoder: nn.Module,
    likelihood: Likelihood,
    data: Tensor,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
    *,
    batches: Batches = epoch_batches,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
) -> list[float]:
    """Train encoder mean + decoder as a deterministic autoencoder on -log p(x | z = loc(x)).

    Args:
        data: (N, *data_shape) on the training device.
        batches: ``(num_data, batch_size, seed, epoch, device) -> index batches`` of an epoch
            (data-parallel training passes this process's shard).
        wrap: wraps the loss module (data-parallel training passes DDP).
    Returns:
        the mean reconstruction loss per datum of every epoch (of the data this process saw).
    """
    return minimise_over_epochs(
        AutoencoderLoss(encoder, decoder, likelihood), data, epochs, batch_size, learning_rate,
        seed, on_epoch, batches=batches, wrap=wrap,
    )


def pretrain_diffusion_autoencoder(
    encoder: nn.Module,
    generator: nn.Module,
    data: Tensor,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
    *,
    batches: Batches = epoch_batches,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    stop: Callable[[int, float], bool] | None = None,
) -> list[float]:
    """Train encoder mean + diffusion generator as a diffusion autoencoder.

    Args:
        data: (N, C, H, W) on the training device.
        epochs: the most epochs to run.
        stop: ``(epoch, loss) -> bool`` after each epoch; True ends the pretraining there
            (e.g. once the generator relies on the codes, :func:`reliance_reached`).
    Returns:
        the mean noise loss per datum of every epoch run.
    """
    encoder.train()
    generator.train()
    return minimise_over_epochs(
        DiffusionAutoencoderLoss(encoder, generator), data, epochs, batch_size, learning_rate,
        seed, on_epoch, batches=batches, wrap=wrap, stop=stop,
    )


def reliance_reached(
    encoder: nn.Module, generator: nn.Module, probe: Tensor, target: float, every: int,
    seed: int, on_measure: Callable[[int, float], None] | None = None,
) -> Callable[[int, float], bool]:
    """A ``stop`` rule for :func:`pretrain_diffusion_autoencoder`: every ``every`` epochs,
    measure ``generator.latent_reliance`` on the probe images (B, C, H, W) with their codes
    (the encoder's means) and stop once it reaches ``target`` (a relative rise of the noise
    loss, e.g. 0.5 = 50 %). ``on_measure(epoch, reliance)`` sees every measurement."""
    if every < 1:
        raise ValueError(f"the reliance check needs every >= 1 epoch, got {every}")

    def stop(epoch: int, loss: float) -> bool:
        if (epoch + 1) % every:
            return False
        with evaluating(encoder), torch.no_grad():
            codes = encoder(probe)[0]
        reliance = generator.latent_reliance(probe, codes, seed)
        if on_measure is not None:
            on_measure(epoch, reliance)
        return reliance >= target

    return stop


def minimise_over_epochs(
    loss_module: nn.Module,
    data: Tensor,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
    *,
    batches: Batches = epoch_batches,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    stop: Callable[[int, float], bool] | None = None,
) -> list[float]:
    """Adam on ``loss_module(x)`` (a mean per datum) over shuffled mini-batches of data (N, ...),
    for ``epochs`` epochs or until ``stop(epoch, loss)`` says so after one.

    Returns the mean loss per datum of every epoch run.
    """
    if wrap is not None:
        loss_module = wrap(loss_module)
    params = list(loss_module.parameters())
    fused = bool(params) and all(p.is_cuda for p in params)
    optimizer = torch.optim.Adam(params, lr=learning_rate, fused=fused or None)
    losses = []
    for epoch in range(epochs):
        total = torch.zeros((), device=data.device)
        seen = 0
        for idx in batches(len(data), batch_size, seed + 7919, epoch, data.device):
            loss = loss_module(data[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
            seen += len(idx)
        losses.append(float(total) / seen)
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
        if stop is not None and stop(epoch, losses[-1]):
            break
    return losses
