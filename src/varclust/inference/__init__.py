"""Training: SVI with enumeration, initialisation, checkpoints."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .init import fit_mixture_to_codes, pretrain_autoencoder
from .svi import SVITrainer

__all__ = [
    "CheckpointError",
    "SVITrainer",
    "fit_mixture_to_codes",
    "load_checkpoint",
    "pretrain_autoencoder",
    "save_checkpoint",
]
