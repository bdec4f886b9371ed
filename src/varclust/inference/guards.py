"""Numerical guards for SVI: skip steps whose loss or gradient is not finite, and explain a run
that keeps producing them.

A step is bad when the loss or the global gradient norm is NaN or infinite; the trainer then
leaves parameters and optimiser state untouched. After ``max_bad_steps`` bad steps in a row
:class:`NonFiniteTrainingError` stops the run; its message names the epoch, the batch, and the
sample sites whose log-probability is not finite on that batch (found by tracing model and guide
on it with :func:`nonfinite_sites`), plus any parameter or gradient that holds NaN or inf.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyro
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import Tensor, nn

__all__ = ["BadStepCounter", "NonFiniteTrainingError", "nonfinite_sites", "nonfinite_tensors"]


class NonFiniteTrainingError(RuntimeError):
    """Training produced a non-finite loss or gradient too many times in a row."""


class BadStepCounter:
    """Counts skipped steps: in a row (reset by a good step), in the epoch, and in the run.

    Args:
        max_in_a_row: this many bad steps in a row stop the run (``should_stop``).
    """

    def __init__(self, max_in_a_row: int) -> None:
        if max_in_a_row < 1:
            raise ValueError(f"max_bad_steps must be at least 1, got {max_in_a_row}")
        self.max_in_a_row = max_in_a_row
        self.in_a_row = 0
        self.total = 0

    def good(self) -> None:
        self.in_a_row = 0

    def bad(self) -> None:
        self.in_a_row += 1
        self.total += 1

    @property
    def should_stop(self) -> bool:
        return self.in_a_row >= self.max_in_a_row

    def state_dict(self) -> dict[str, int]:
        return {"in_a_row": self.in_a_row, "total": self.total}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.in_a_row = int(state["in_a_row"])
        self.total = int(state["total"])


def nonfinite_tensors(named: Iterable[tuple[str, Tensor | None]]) -> list[str]:
    """Names of the tensors that hold NaN or inf (None entries are skipped)."""
    return [name for name, t in named if t is not None and not bool(torch.isfinite(t).all())]


@torch.no_grad()
def nonfinite_sites(
    model: PyroModule, guide: PyroModule, x: Tensor, indices: Tensor, num_data: int
) -> list[str]:
    """Trace the guide, replay the model against it (cluster enumerated, as in the ELBO) and
    list the sample sites whose log-probability holds NaN or inf on this batch.

    Args:
        x: (B, ...) the batch; indices: (B,) its positions in the data; num_data: N.
    Returns:
        descriptions like ``"model site 'x': log-prob not finite for 3 of 20 data points"``.
    """
    found = []
    with pyro.validation_enabled(False):
        guide_trace = poutine.trace(guide).get_trace(x, indices, num_data)
        enumerated = poutine.enum(model, first_available_dim=-2)
        model_trace = poutine.trace(poutine.replay(enumerated, trace=guide_trace)).get_trace(
            x, indices, num_data
        )
        for role, trace in (("guide", guide_trace), ("model", model_trace)):
            for name, site in trace.nodes.items():
                if site["type"] != "sample":
                    continue
                log_prob = site["fn"].log_prob(site["value"])
                bad = ~torch.isfinite(log_prob)
                if bool(bad.any()):
                    rows = int(bad.reshape(-1, bad.shape[-1]).any(0).sum()) if bad.dim() else 1
                    found.append(
                        f"{role} site {name!r}: log-prob not finite for {rows} of "
                        f"{len(x)} data points"
                    )
    return found


def describe_bad_step(
    model: PyroModule,
    guide: PyroModule,
    parameters: nn.Module,
    x: Tensor,
    indices: Tensor,
    num_data: int,
) -> str:
    """Why a batch gives a bad step: the sites with non-finite log-prob, then the parameters and
    gradients holding NaN or inf."""
    sites = nonfinite_sites(model, guide, x, indices, num_data)
    parts = ["; ".join(sites) if sites else "every site's log-prob is finite"]
    named = list(parameters.named_parameters())
    bad_params = nonfinite_tensors(named)
    if bad_params:
        parts.append(f"parameters not finite: {', '.join(bad_params)}")
    bad_grads = nonfinite_tensors((n, p.grad) for n, p in named)
    if bad_grads:
        parts.append(f"gradients not finite: {', '.join(bad_grads[:8])}")
    return "; ".join(parts)
