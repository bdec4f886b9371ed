"""benchmarks/codes_ceiling.py: the label-informed ceilings on codes, against known answers."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "codes_ceiling.py"


def _script(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # as `python benchmarks/...` runs it
    return importlib.import_module("codes_ceiling")


def _two_tilted_blobs():
    rng = np.random.default_rng(0)
    tilt = np.array([[2.0, 0.0], [1.5, 0.3]])
    codes = np.concatenate([rng.normal(size=(200, 2)) @ tilt, rng.normal(size=(200, 2)) @ tilt + 8])
    return codes, np.repeat([0, 1], 200)


def test_em_from_the_classes_keeps_separated_classes_and_scores_the_likelihood(monkeypatch):
    codes, labels = _two_tilted_blobs()
    scores = _script(monkeypatch).em_from(torch.tensor(codes), np.eye(2)[labels], 0, labels)
    assert scores["acc"] == 1.0 and scores["nmi"] > 0.99
    # the per-datum log-likelihood of two Gaussians that fit the data: finite, and above one
    # Gaussian's (which the blobs, 8 apart, fit badly)
    one = np.cov(codes.T)
    single = torch.distributions.MultivariateNormal(
        torch.tensor(codes.mean(0)), torch.tensor(one)).log_prob(torch.tensor(codes)).mean()
    assert np.isfinite(scores["loglik"]) and scores["loglik"] > float(single)
