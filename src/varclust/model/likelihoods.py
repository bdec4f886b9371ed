"""Likelihoods p(x | decoder output): each maps the decoder's raw output to a distribution.

Decoders produce an unconstrained tensor of the data's shape; a likelihood turns it into a
Pyro distribution whose event covers the whole datum, and into the image mean for plots.

Bernoulli and grey levels: Pyro's ``Bernoulli`` checks that observations are 0 or 1 when
validation is on. Images with grey levels are in [0, 1] but not binary; the usual deep-clustering
practice (VaDE, DEC) scores them with the Bernoulli cross-entropy, which is what
:class:`BernoulliLikelihood` does, with validation switched off for that site only. That score is
not a normalised density of a grey-level pixel; :class:`GaussianLikelihood` is.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from torch import Tensor

__all__ = [
    "BernoulliLikelihood",
    "ContinuousBernoulliLikelihood",
    "GaussianLikelihood",
    "LaplaceLikelihood",
    "Likelihood",
]


class Likelihood(PyroModule):
    """Base class. Subclasses set ``support_min``/``support_max`` for the input check."""

    support_min: float | None = None
    support_max: float | None = None

    def forward(self, out: Tensor, event_dim: int) -> dist.TorchDistribution:
        raise NotImplementedError

    def mean(self, out: Tensor) -> Tensor:
        """The expected datum under the likelihood, same shape as ``out``."""
        raise NotImplementedError

    def decoder_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of the decoder's raw output for one datum (default: the datum's shape)."""
        return tuple(data_shape)

    def check_data(self, x: Tensor) -> None:
        """Raise ValueError when the data fall outside the likelihood's support."""
        lo, hi = float(x.min()), float(x.max())
        if self.support_min is not None and lo < self.support_min or (
            self.support_max is not None and hi > self.support_max
        ):
            raise ValueError(
                f"{type(self).__name__} needs data in [{self.support_min}, {self.support_max}], "
                f"got values in [{lo:.4g}, {hi:.4g}]; rescale the data (e.g. divide 8-bit images "
                "by 255) or choose the gaussian likelihood"
            )


class BernoulliLikelihood(Likelihood):
    """x ~ Bernoulli(logits=out), pixels in [0, 1] (grey levels scored by cross-entropy)."""

    support_min, support_max = 0.0, 1.0

    def forward(self, out: Tensor, event_dim: int) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=out, validate_args=False).to_event(event_dim)

    def mean(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out)


class GaussianLikelihood(Likelihood):
    """x ~ Normal(out, scale) with one learned scale shared by all pixels (floored at 1e-3)."""

    def __init__(self, init_scale: float = 0.1, min_scale: float = 1e-3) -> None:
        super().__init__()
        self.scale = PyroParam(torch.tensor(init_scale), constraints.greater_than(min_scale))

    def forward(self, out: Tensor, event_dim: int) -> dist.TorchDistribution:
        return dist.Normal(out, self.scale).to_event(event_dim)

    def mean(self, out: Tensor) -> Tensor:
        return out


class ContinuousBernoulliLikelihood(Likelihood):
    """x ~ ContinuousBernoulli(logits=out): a normalised density on [0, 1] (Loaiza-Ganem &
    Cunningham 2019), the proper counterpart of the Bernoulli score for grey levels."""

    support_min, support_max = 0.0, 1.0

    def forward(self, out: Tensor, event_dim: int) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=out).to_event(event_dim)

    def mean(self, out: Tensor) -> Tensor:
        return dist.ContinuousBernoulli(logits=out).mean


class LaplaceLikelihood(GaussianLikelihood):
    """x ~ Laplace(out, scale) with one learned scale shared by all pixels (floored at 1e-3)."""

    def forward(self, out: Tensor, event_dim: int) -> dist.TorchDistribution:
        return dist.Laplace(out, self.scale).to_event(event_dim)
