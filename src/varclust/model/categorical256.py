"""A categorical likelihood over the 256 grey levels of 8-bit images.

The decoder emits 256 logits per pixel; the datum stays a float image in [0, 1] everywhere
else in the library, and the likelihood reads pixel value v as the grey level round(255 v).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

from .likelihoods import Likelihood

__all__ = ["GreyLevelCategorical", "GreyLevelCategoricalLikelihood", "NUM_LEVELS"]

NUM_LEVELS = 256


class GreyLevelCategorical(dist.TorchDistribution):
    """Independent categoricals over grey levels k / 255, k = 0..255, one per pixel.

    Args:
        logits: (..., 256) unnormalised log probabilities of the levels; batch shape (...).
    Values are floats in [0, 1]; ``log_prob(v)`` is log softmax(logits)[round(255 v)].
    """

    arg_constraints = {"logits": constraints.real_vector}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(self, logits: Tensor, validate_args: bool | None = None) -> None:
        self.logits = logits.log_softmax(-1)
        super().__init__(logits.shape[:-1], torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return GreyLevelCategorical(self.logits.expand(*batch_shape, NUM_LEVELS))

    def log_prob(self, value: Tensor) -> Tensor:
        levels = (value * (NUM_LEVELS - 1)).round().long().clamp(0, NUM_LEVELS - 1)
        logits, levels = torch.broadcast_tensors(self.logits, levels.unsqueeze(-1))
        return logits.gather(-1, levels[..., :1]).squeeze(-1)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        levels = dist.Categorical(logits=self.logits).sample(sample_shape)
        return levels.to(self.logits.dtype) / (NUM_LEVELS - 1)

    @property
    def mean(self) -> Tensor:
        grey = torch.arange(NUM_LEVELS, device=self.logits.device, dtype=self.logits.dtype)
        return (self.logits.exp() * grey).sum(-1) / (NUM_LEVELS - 1)


class GreyLevelCategoricalLikelihood(Likelihood):
    """x ~ GreyLevelCategorical per pixel: a normalised likelihood of 8-bit images.

    The decoder's output has 256 times the datum's first axis (channels, or features for flat
    data): (..., 256 * C, H, W) is read as (..., 256, C, H, W). On 28x28 images with the MLP
    decoder that is a 500 x 200704 output layer; the conv decoder is far lighter.
    """

    support_min, support_max = 0.0, 1.0
    event_dim: int | None = None

    def decoder_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Also records the datum's rank, which :meth:`mean` needs."""
        self.event_dim = len(data_shape)
        return (NUM_LEVELS * data_shape[0], *data_shape[1:])

    @staticmethod
    def _logits(out: Tensor, event_dim: int) -> Tensor:
        """(..., 256 * C, *rest) -> (..., C, *rest, 256)."""
        lead = out.shape[: out.dim() - event_dim]
        first, rest = out.shape[out.dim() - event_dim], out.shape[out.dim() - event_dim + 1:]
        levels_first = out.reshape(*lead, NUM_LEVELS, first // NUM_LEVELS, *rest)
        return levels_first.movedim(len(lead), -1)

    def forward(self, out: Tensor, event_dim: int) -> dist.TorchDistribution:
        return GreyLevelCategorical(self._logits(out, event_dim)).to_event(event_dim)

    def mean(self, out: Tensor) -> Tensor:
        if self.event_dim is None:
            raise RuntimeError("call decoder_shape(data_shape) before mean(): it sets the rank")
        return GreyLevelCategorical(self._logits(out, self.event_dim)).mean
