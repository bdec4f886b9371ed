"""Evaluation mode for the length of a block, each module's own mode restored after it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["evaluating"]


@contextlib.contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """Put ``modules`` (and every submodule) in eval mode within the block; afterwards, also
    when the block raises, each submodule gets back the mode it had, mixed modes included.

    Reading a fit (codes, cluster posteriors, held-out scores) must not change how the next
    training step runs: a caller between two epochs, or in a notebook, finds its modules as
    it left them."""
    saved = [(sub, sub.training) for module in modules for sub in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for sub, training in saved:
            sub.training = training
