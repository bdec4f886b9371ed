"""The networks' arithmetic (``FitConfig.precision``): their matrix products and convolutions
under bfloat16 autocast, their outputs float32, so that everything downstream of them (the
likelihood's log-probabilities, the mixture prior's densities, Pyro's enumerated ELBO and its
einsums) stays in float32. The parameters stay float32 whatever the precision, and the
precision is a plain attribute, not a buffer: fits of either precision have the same state
dict and load into each other."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["COMPUTE_DTYPES", "MixedPrecisionNetwork"]

#: ``FitConfig.precision`` -> the dtype the networks compute in
COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class MixedPrecisionNetwork(nn.Module):
    """A network whose ``forward`` computes under :meth:`autocast` and returns its outputs in
    the parameters' dtype (:meth:`leave_autocast`; float32).

    Args:
        compute_dtype: one of :data:`COMPUTE_DTYPES`; float32 leaves autocast off.
    """

    def __init__(self, compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if compute_dtype not in COMPUTE_DTYPES.values():
            raise ValueError(f"compute_dtype must be one of {list(COMPUTE_DTYPES.values())}, "
                             f"got {compute_dtype}")
        self.compute_dtype = compute_dtype

    def compute_dtype_on(self, device: torch.device) -> torch.dtype:
        """The dtype this network computes in on ``device``: :attr:`compute_dtype`."""
        return self.compute_dtype

    def autocast(self, x: Tensor) -> torch.autocast:
        """Autocast to the compute dtype on the device of the input x (CPU or CUDA), off when
        that is float32; the caller casts what leaves the block with :meth:`leave_autocast`."""
        dtype = self.compute_dtype_on(x.device)
        return torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32)

    def leave_autocast(self, t: Tensor) -> Tensor:
        """t, computed under :meth:`autocast`, in the dtype of this network's parameters
        (float32, or float64 for a model cast with ``.double()``)."""
        return t.to(next(self.parameters()).dtype)
