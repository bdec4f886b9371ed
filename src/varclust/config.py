"""The configuration of a fit: what the model is and how it is trained."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from numbers import Integral, Real
from pathlib import Path
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
    Reliability: with an output folder, a checkpoint is also written every
    ``checkpoint_every_steps`` mini-batches inside an epoch (0: only after each epoch);
    ``max_bad_steps`` steps in a row with a non-finite loss or gradient stop the run (fewer are
    skipped and counted).
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
    checkpoint_every_steps: int = 0
    max_bad_steps: int = 10
    lr_scaling: str = "none"

    def __post_init__(self) -> None:
        check_field_types(self)
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.network not in ("mlp", "conv"):
            raise ValueError(f"network must be 'mlp' or 'conv', got {self.network!r}")
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(
                f"likelihood must be 'bernoulli' or 'gaussian', got {self.likelihood!r}"
            )
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
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
        if not (math.isfinite(self.learning_rate) and math.isfinite(self.pretrain_lr)):
            raise ValueError("learning rates must be finite")
        if not 0 < self.clip_norm < float("inf"):
            raise ValueError(f"clip_norm must be a positive finite number, got {self.clip_norm}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        if self.checkpoint_every_steps < 0:
            raise ValueError(
                f"checkpoint_every_steps must be >= 0 (0: after each epoch only), "
                f"got {self.checkpoint_every_steps}"
            )
        if self.max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be at least 1, got {self.max_bad_steps}")

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

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> FitConfig:
        """Read a config from a JSON object file of :class:`FitConfig` fields (others default).

        Raises:
            ValueError: the file is missing, is not a JSON object, or holds unknown keys or bad
                values; the message names the file.
        """
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except OSError as err:
            raise ValueError(f"cannot read the config file {path}: {err.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"the config file {path} is not valid JSON: {err}") from None
        if not isinstance(d, dict):
            raise ValueError(
                f"the config file {path} must hold a JSON object of settings, "
                f"got a {type(d).__name__}"
            )
        try:
            return cls.from_dict(d)
        except (ValueError, TypeError) as err:
            raise ValueError(f"the config file {path}: {err}") from None


_FIELD_TYPES = {"int": (Integral, int, "an integer"), "float": (Real, float, "a number"),
                "str": (str, str, "a string")}


def check_field_types(config: Any) -> None:
    """TypeError naming the field when a value has the wrong type (bools are not numbers);
    numpy scalars are turned into Python ones."""
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name == "hidden":
            ok = isinstance(value, (list, tuple)) and all(
                isinstance(h, Integral) and not isinstance(h, bool) for h in value
            )
            want = "a list of integers"
        else:
            kind, cast, want = _FIELD_TYPES[f.type]
            ok = isinstance(value, kind) and not isinstance(value, bool)
            if ok:
                setattr(config, f.name, cast(value))
        if not ok:
            raise TypeError(f"{f.name} must be {want}, got {value!r}")
