"""The base of the terms that the trainer adds to the loss outside the ELBO (:mod:`.regularisers`,
:mod:`.umap_graph`): what every such term owns besides its loss."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["TermOutsideELBO"]


class TermOutsideELBO:
    """A term of the training loss that is not part of the ELBO, named after the
    :class:`~varclust.config.FitConfig` field of its weight (:attr:`name`).

    Subclasses build themselves from a config (``from_config(config, data)``) and give
    ``loss(guide, prior, x, indices, num_data, log_q)``. A term that needs the fit's state at the
    start of training (the codes of the pretrained encoder, say) builds it in :meth:`start` and
    keeps it in its :meth:`state_dict`, which the trainer's checkpoint carries, so that a resumed
    fit continues with the same term.
    """

    name = ""
    #: whether :meth:`loss` reads the batch's log q(c | x) (the trainer computes it only then)
    needs_cluster_posterior = True
    #: the SVI epoch from which the term acts: :meth:`start` runs as that epoch starts (0: as
    #: training starts, after pretraining or a warm start)
    start_epoch = 0

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has built what :meth:`loss` needs (the trainer leaves the term
        out of the loss until then). Default: True (nothing to build)."""
        return True

    def start(self, guide: nn.Module, data: Tensor) -> None:
        """Before the first step of epoch :attr:`start_epoch` on ``data`` (N, ...), with
        ``guide`` as it is then. Default: nothing to build. A term restored from a checkpoint
        (:meth:`load_state_dict`) keeps what it restored."""

    def state_dict(self) -> dict:
        """What :meth:`start` built (tensors), for a checkpoint. Default: nothing."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output. Default: nothing to restore."""
