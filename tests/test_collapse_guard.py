"""The collapse guard (issue 15, defect 4): clusters in use recorded every epoch, a warning
when the clustering collapses."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from varclust import VarClust
from varclust.inference.collapse import cluster_usage, collapse_warning


def test_cluster_usage_counts_clusters_with_one_percent():
    assigned = np.array([0] * 150 + [1] * 48 + [2] * 2)  # 2 of 200 = 1 %
    assert cluster_usage(assigned, 4) == {"clusters_used": 3, "largest_cluster": 0.75}
    assert cluster_usage(np.array([0] * 199 + [3]), 4)["clusters_used"] == 1


@pytest.mark.parametrize("usage, says", [
    ({"clusters_used": 4, "largest_cluster": 0.3}, "only 4 of the K=10"),
    ({"clusters_used": 9, "largest_cluster": 0.6}, "one cluster holds 60%"),
    ({"clusters_used": 9, "largest_cluster": 0.3}, None),
])
def test_collapse_warning_thresholds(usage, says):
    message = collapse_warning(usage, 10)
    assert (message is None) if says is None else (says in message)


def test_a_collapsed_fit_is_recorded_and_warned(tmp_path, caplog):
    rng = np.random.default_rng(0)
    x = np.clip(0.5 + 0.01 * rng.normal(size=(200, 8)), 0, 1).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="varclust"):
        vc = VarClust(4, latent_dim=2, hidden=(8,), epochs=2, pretrain_epochs=0, seed=0,
                      device="cpu").fit(x, out_dir=tmp_path / "run", progress=False)
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert [h["clusters_used"] for h in history] == [h["clusters_used"] for h in vc.history]
    assert all("largest_cluster" in h for h in history)
    assert vc.history[-1]["largest_cluster"] > 0.5
    assert vc.collapse_warning_ and "collapsed" in vc.collapse_warning_
    assert any("the clustering has collapsed" in r.getMessage() for r in caplog.records)


def test_a_good_fit_is_not_warned(caplog):
    rng = np.random.default_rng(0)
    protos = rng.random((3, 16)) > 0.5
    y = np.arange(150) % 3
    x = np.where(rng.random((150, 16)) < 0.05, ~protos[y], protos[y]).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="varclust"):
        vc = VarClust(3, latent_dim=2, hidden=(16,), epochs=2, pretrain_epochs=20,
                      batch_size=32, device="cpu").fit(x, y, progress=False)
    assert vc.history[-1]["clusters_used"] == 3 and vc.collapse_warning_ is None
    assert not any("collapsed" in r.getMessage() for r in caplog.records)


def test_the_command_line_says_so_when_it_is_done(tmp_path, capsys):
    from varclust.cli import main

    rng = np.random.default_rng(0)
    np.save(tmp_path / "X.npy", np.clip(0.5 + 0.01 * rng.normal(size=(200, 8)), 0, 1
                                        ).astype(np.float32))
    assert main(["fit", "--data", str(tmp_path / "X.npy"), "--clusters", "4", "--epochs", "1",
                 "--pretrain-epochs", "0", "--hidden", "8", "--latent-dim", "2", "--quiet",
                 "--out", str(tmp_path / "run")]) == 0
    done = [line for line in capsys.readouterr().out.splitlines() if "done" in line]
    assert len(done) == 1 and "WARNING: the clustering collapsed" in done[0]
