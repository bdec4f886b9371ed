"""Training: SVI with enumeration, initialisation, checkpoints."""

from ..model.mixture_fit import fit_mixture_to_codes
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .init import pretrain_autoencoder
from .svi import SVITrainer

__all__ = [
    "CheckpointError",
    "SVITrainer",
    "fit_mixture_to_codes",
    "load_checkpoint",
    "pretrain_autoencoder",
    "save_checkpoint",
]
