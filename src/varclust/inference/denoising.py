"""Denoising autoencoder pretraining (Vincent et al. 2008): the encoder sees a corrupted copy of
each image, the decoder is scored against the clean one.

``FitConfig.pretrain_masking`` = p sets each input value to 0 with probability p, independently,
in the encoder's input during autoencoder pretraining only. The loss stays
-log p(x | z = loc(x~)) with x the clean image and x~ its masked copy, so the codes must carry
what the masked pixels held. This is a training device, not part of the model or its ELBO: SVI
and prediction see the clean images.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["MaskedInput"]


class MaskedInput(nn.Module):
    """An encoder whose input is masked: x (B, *data_shape) -> ``encoder(x * keep)``, with
    keep (B, *data_shape) drawn Bernoulli(1 - probability) from torch's global generator (so a
    resumed fit, which restores that generator, draws the same masks).

    It holds no parameters of its own: ``encoder``'s are its parameters, under ``encoder.``.
    With ``probability`` 0 it is ``encoder`` and draws nothing.
    """

    def __init__(self, encoder: nn.Module, probability: float) -> None:
        super().__init__()
        if not 0.0 <= probability < 1.0:
            raise ValueError(f"the masking probability must be in [0, 1), got {probability}")
        self.encoder, self.probability = encoder, probability

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.probability == 0.0:
            return self.encoder(x)
        keep = torch.rand_like(x) >= self.probability
        return self.encoder(x * keep)
