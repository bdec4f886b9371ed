"""The neighbour criterion of --select-by: its chance-corrected agreement against a hand
computation, what it prefers on data with known structure, and its use by fit_restarts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from varclust import FitConfig
from varclust.inference.regularisers import nearest_neighbours
from varclust.restarts import RESTARTS_FILE, fit_restarts
from varclust.selection import SELECTION_CRITERIA, neighbour_agreement


def test_neighbour_agreement_matches_a_hand_computation():
    labels = np.array([0, 0, 1, 1])
    neighbours = np.array([[1], [0], [3], [0]])
    # a = 3 of 4 pairs agree; e = 0.5^2 + 0.5^2 = 0.5; (0.75 - 0.5) / (1 - 0.5) = 0.5
    assert neighbour_agreement(labels, neighbours) == pytest.approx(0.5)
    # sizes 3 and 1: e = 0.75^2 + 0.25^2 = 0.625; neighbours [[1, 2], [0, 2], [0, 1], [2, 0]]
    # agree 2 + 2 + 2 + 0 of 8 = 0.75: (0.75 - 0.625) / 0.375 = 1/3
    assert neighbour_agreement(np.array([0, 0, 0, 1]),
                               np.array([[1, 2], [0, 2], [0, 1], [2, 0]])) == pytest.approx(1 / 3)


def test_one_cluster_scores_zero_and_a_bad_table_is_refused():
    assert neighbour_agreement(np.zeros(5, dtype=int), np.ones((5, 2), dtype=int)) == 0.0
    with pytest.raises(ValueError, match=r"neighbours must be \(N, k\) for N = 5"):
        neighbour_agreement(np.zeros(5, dtype=int), np.ones((4, 2), dtype=int))


def test_the_partition_along_the_gap_scores_higher_than_one_across_it():
    generator = torch.Generator().manual_seed(0)
    blobs = torch.cat([torch.randn(100, 2, generator=generator) - 4,
                       torch.randn(100, 2, generator=generator) + 4])
    table = nearest_neighbours(blobs, 10).numpy()
    along = np.repeat([0, 1], 100)  # the two blobs
    across = (blobs[:, 0] - blobs[:, 1] > 0).numpy().astype(int)  # cuts both blobs in half
    scrambled = np.random.default_rng(0).permutation(along)
    assert neighbour_agreement(along, table) > 0.95
    assert neighbour_agreement(along, table) > neighbour_agreement(across, table) + 0.2
    assert abs(neighbour_agreement(scrambled, table)) < 0.1  # chance level, whatever the sizes


def test_select_by_neighbours_keeps_the_highest_score_and_records_it(tmp_path):
    x = torch.rand(60, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    config = FitConfig(num_clusters=3, latent_dim=2, hidden=(16,), epochs=2, pretrain_epochs=1,
                       batch_size=32, device="cpu", seed=5)
    out = tmp_path / "runs"
    result = fit_restarts(config, x, restarts=2, select_by="neighbours", out_dir=out,
                          progress=False)
    table = nearest_neighbours(x, 10).numpy()
    expected = [neighbour_agreement(np.asarray(f.predict(x).labels), table)
                for f in result.fits]
    assert [c.score for c in result.candidates] == pytest.approx(expected)
    assert result.chosen == int(np.argmax(expected))
    record = json.loads((out / RESTARTS_FILE).read_text())
    assert record["select_by"] == "neighbours"
    assert record["criterion"].startswith(SELECTION_CRITERIA["neighbours"].describe(3))
    labelled = fit_restarts(config, x, np.arange(60) % 3, restarts=2, select_by="neighbours",
                            progress=False)
    assert labelled.chosen == result.chosen
