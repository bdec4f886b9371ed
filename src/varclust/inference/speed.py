"""The training device, the learning rate for large batches, and TF32 on recent GPUs."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

__all__ = [
    "LR_SCALING_RULES",
    "REFERENCE_BATCH",
    "configure_fast_math",
    "fast_math",
    "resolve_device",
    "scaled_learning_rate",
]

#: the batch size at which ``learning_rate`` is taken as given (the default batch)
REFERENCE_BATCH = 256
LR_SCALING_RULES = ("none", "sqrt", "linear")


def scaled_learning_rate(learning_rate: float, batch_size: int, rule: str = "none") -> float:
    """The learning rate for ``batch_size`` given one tuned at :data:`REFERENCE_BATCH`.

    ``"sqrt"`` multiplies by sqrt(batch / 256) (the usual rule for Adam), ``"linear"`` by
    batch / 256, ``"none"`` leaves it.
    """
    if rule not in LR_SCALING_RULES:
        raise ValueError(f"lr_scaling must be one of {LR_SCALING_RULES}, got {rule!r}")
    ratio = batch_size / REFERENCE_BATCH
    factor = {"none": 1.0, "sqrt": math.sqrt(ratio), "linear": ratio}[rule]
    return learning_rate * factor


def configure_fast_math(device: torch.device) -> bool:
    """On an Ampere or newer GPU let float32 matrix products and convolutions use TF32 tensor
    cores (PyTorch's ``set_float32_matmul_precision("high")``). Returns whether it did.

    TF32 keeps float32's range with a 10-bit mantissa, so those products differ from full
    float32 at about 1e-3 relative: faster, not the same arithmetic. This is a process-wide
    PyTorch setting (:func:`fast_math` restores it after a block); CPUs are left alone.
    """
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    major, _ = torch.cuda.get_device_capability(device)
    if major < 8:
        return False
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    return True


@contextlib.contextmanager
def fast_math(device: torch.device) -> Iterator[bool]:
    """:func:`configure_fast_math` for the block (a fit); PyTorch's previous settings are
    restored after it, so the caller's own float32 work is not changed behind its back."""
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    try:
        yield configure_fast_math(device)
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def resolve_device(device: str) -> torch.device:
    """"auto" picks CUDA when available; "cuda" without a GPU is an error, not a silent CPU run."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            "device='cuda' was asked for but PyTorch sees no GPU; use 'cpu' or 'auto'"
        )
    return torch.device(device)
