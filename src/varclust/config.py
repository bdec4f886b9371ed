"""The configuration of a fit: what the model is and how it is trained."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["FitConfig", "STRUCTURAL_KEYS"]

#: keys that fix the shapes of parameters: a checkpoint only loads into a model that agrees on them
STRUCTURAL_KEYS = ("num_clusters", "latent_dim", "network", "hidden", "likelihood")


@dataclass
class FitConfig:
    """Every setting of a fit. Defaults follow VaDE (MLP 500-500-2000, D=10, Adam 2e-3).

    Model: ``num_clusters`` K >= 2, ``latent_dim`` D, ``network`` ("mlp" or "conv"; the conv nets
    take 28x28 or 32x32 images), ``hidden`` (encoder layer widths, mirrored by the decoder),
    ``likelihood`` ("bernoulli" or "gaussian").
    Training: ``epochs`` of SVI after ``pretrain_epochs`` of autoencoder pretraining (then a
    GaussianMixture fitted to the codes initialises the prior; 0 skips both), Adam with learning
    rate ``learning_rate`` multiplied by ``lr_decay`` after every epoch, gradients clipped to
    norm ``clip_norm``, mini-batches of ``batch_size``, ``seed`` for every random draw,
    ``device`` "auto", "cpu" or "cuda"; ``lr_scaling`` ("none", "sqrt", "linear") scales
    ``learning_rate`` from batch 256 to ``batch_size`` for large-batch training.
    """

    num_clusters: int = 10
    latent_dim: int = 10
    network: str = "mlp"
    hidden: tuple[int, ...] = field(default=(500, 500, 2000))
    likelihood: str = "bernoulli"
    epochs: int = 50
    batch_size: int = 256
    learning_rate: float = 2e-3
    lr_decay: float = 0.97
    clip_norm: float = 10.0
    pretrain_epochs: int = 10
    pretrain_lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    lr_scaling: str = "none"

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.network not in ("mlp", "conv"):
            raise ValueError(f"network must be 'mlp' or 'conv', got {self.network!r}")
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(
                f"likelihood must be 'bernoulli' or 'gaussian', got {self.likelihood!r}"
            )
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        for name in ("latent_dim", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("epochs", "pretrain_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.learning_rate > 0 or not self.pretrain_lr > 0:
            raise ValueError("learning rates must be positive")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.lr_scaling not in ("none", "sqrt", "linear"):
            raise ValueError(
                f"lr_scaling must be 'none', 'sqrt' or 'linear', got {self.lr_scaling!r}"
            )
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must list positive layer widths, got {self.hidden}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitConfig:
        """Build a config, refusing keys it does not know (a typo must not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown config keys {unknown}; valid keys are {sorted(known)}"
            )
        return cls(**d)

    def replace(self, **changes: Any) -> FitConfig:
        return FitConfig.from_dict({**self.to_dict(), **changes})
