"""What every amortized guide shares: the model's signature, the data plate, a global guide."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pyro.nn import PyroModule
from torch import Tensor, nn

from ..model.generative import data_plate

if TYPE_CHECKING:  # the type only: inference imports the guides
    from ..inference.revival import Split

__all__ = ["ClusterGuide", "code_posterior"]


def code_posterior(prior: nn.Module, code: Tensor) -> Tensor:
    """log p(c | z = code) under the prior's point parameters: code (B, D) -> (B, K)."""
    log_joint = prior.log_joint(code)
    return log_joint - log_joint.logsumexp(-1, keepdim=True)


class ClusterGuide(PyroModule):
    """Base class of the guides: ``forward(x, indices, num_data, cluster, cluster_mask)`` runs
    the prior's global guide (a Bayesian prior's, attached with :meth:`attach_global_guide`)
    outside the data plate, then :meth:`local` inside it.

    Subclasses define ``encoder`` (x -> (loc, scale) of a single code, what autoencoder
    pretraining trains), :meth:`local`, :meth:`encode` and :meth:`cluster_logits`.
    """

    def __init__(self) -> None:
        super().__init__()
        # a plain reference, not a submodule: the prior owns (and checkpoints) its global guide
        object.__setattr__(self, "_global_guide", None)

    def attach_global_guide(self, global_guide: Callable[[], None] | None) -> None:
        """Run ``global_guide()`` (which samples the prior's global sites) before the local
        sites. Pass None to detach."""
        object.__setattr__(self, "_global_guide", global_guide)

    def forward(
        self,
        x: Tensor,
        indices: Tensor | None = None,
        num_data: int | None = None,
        cluster: Tensor | None = None,
        cluster_mask: Tensor | None = None,
    ) -> None:
        """Same signature as the model: x (B, ...), indices (B,), num_data N, and in
        semi-supervised batches cluster (B,) labels observed where cluster_mask (B,) is true."""
        if self._global_guide is not None:
            self._global_guide()
        with data_plate(x, indices, num_data):
            self.local(x, cluster, cluster_mask)

    def bind_model(self, model: nn.Module) -> None:
        """Called once when model and guide are built together; a guide whose sites need a
        matching model structure sets it up here (the relaxed guide). Default: nothing."""

    def start_epoch(self, epoch: int) -> None:
        """Called before each training epoch (0-based), e.g. to anneal a temperature."""

    def epoch_summary(self) -> dict[str, float]:
        """Numbers recorded with each epoch's history (e.g. a temperature). Default: none."""
        return {}

    def init_from_mixture(self, weights: Tensor, loc: Tensor, scale: Tensor) -> None:
        """Start the guide's own cluster parameters at the mixture fitted to the pretrained
        codes: weights (K,), loc (K, D), scale (K, D). Default: nothing (no such parameters)."""

    def split_cluster(self, split: Split) -> None:
        """Follow a split of the prior's cluster ``split.donor`` into it and ``split.revived``
        (:class:`varclust.inference.revival.Split`). Default: nothing (a guide whose q(c | x)
        is the prior's p(c | z) follows the prior)."""

    def set_initial_code_scale(self, scale: float) -> None:
        """Make q(z | x) start with this scale for every x after pretraining (which trains
        only the means), leaving the means as they are. Default: nothing."""

    def local(self, x: Tensor, cluster: Tensor | None, cluster_mask: Tensor | None) -> None:
        """The per-datum sites, inside the data plate."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """A code per datum: (loc, scale), each (B, D)."""
        raise NotImplementedError

    def cluster_logits(self, x: Tensor, prior: nn.Module) -> Tensor:
        """Normalised log cluster posterior per datum: (B, K)."""
        return code_posterior(prior, self.encode(x)[0])
