"""Pyro's ``TraceEnum_ELBO`` without the host synchronisation it makes on every step.

``TraceEnum_ELBO.differentiable_loss`` ends with ``warn_if_nan(loss)``, which evaluates
``torch.isnan(loss).any()`` as a Python bool on the forward pass and again on the gradient in the
backward pass: on a GPU each one waits for the device to finish. :class:`SyncFreeTraceEnum_ELBO`
computes the very same estimator (Pyro's traces and its dice ELBO, unchanged) and leaves the NaN
check to the trainer, which looks at the loss once per epoch.
"""

from __future__ import annotations

import torch
from pyro.infer import TraceEnum_ELBO
from pyro.infer.traceenum_elbo import _compute_dice_elbo
from pyro.infer.util import is_identically_zero

__all__ = ["SyncFreeTraceEnum_ELBO"]


class SyncFreeTraceEnum_ELBO(TraceEnum_ELBO):
    """``TraceEnum_ELBO`` whose ``differentiable_loss`` never copies a value to the host.

    One ELBO serves every guide. The relaxed guide has no enumerated site (its cluster is a
    continuous relaxed variable), where ``TraceEnum_ELBO`` computes what ``Trace_ELBO`` does, so
    Pyro's warning that no site is enumerated is off (``strict_enumeration_warning=False``).
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("strict_enumeration_warning", False)
        super().__init__(**kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        elbo = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo_particle = _compute_dice_elbo(model_trace, guide_trace)
            if not is_identically_zero(elbo_particle):
                elbo = elbo + elbo_particle
        elbo = elbo / self.num_particles
        if not torch.is_tensor(elbo) or not elbo.requires_grad:
            raise ValueError(f"the ELBO cannot be differentiated: {elbo}")
        return -elbo
