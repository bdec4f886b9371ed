"""benchmarks/consensus_subsets.py: the consensus of random subsets of finished run folders."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import binary_blobs

from varclust import VarClust
from varclust.inference.consensus import consensus_responsibilities
from varclust.metrics import clustering_scores

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "consensus_subsets.py"


def _three_run_folders(tmp_path: Path, data_seed: int):
    """Three tiny fits (seeds 0, 1, 2) of one set of blobs, each saved to a run folder that
    records its data: (images, labels, run folders, fits)."""
    images, labels = binary_blobs(90, num_pixels=16, seed=data_seed)
    images = torch.as_tensor(images)
    runs, fits = [], []
    for seed in range(3):
        runs.append(tmp_path / f"run_{seed}")
        fits.append(VarClust(3, latent_dim=2, hidden=(16,), epochs=2, pretrain_epochs=2,
                             batch_size=30, device="cpu", seed=seed).fit(images, progress=False))
        fits[-1].save(runs[-1], images, labels)
    return images, labels, runs, fits


def test_the_table_scores_single_fits_and_the_consensus_of_subsets(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # as `python benchmarks/...` runs it
    script = importlib.import_module("consensus_subsets")
    images, labels, runs, fits = _three_run_folders(tmp_path, data_seed=1)
    out = tmp_path / "table.json"
    monkeypatch.setattr(sys, "argv", ["consensus_subsets.py", *map(str, runs), "--sizes", "2",
                                      "3", "--draws", "4", "--json", str(out)])
    script.main()
    written = json.loads(out.read_text())
    singles = [clustering_scores(labels, f.predict(images).labels) for f in fits]
    assert [r["acc"] for r in written["single_fits"]] == pytest.approx([s["acc"] for s in singles])
    # every subset of 3 is all three fits: one consensus, drawn 4 times
    everything = consensus_responsibilities([f.predict(images).responsibilities for f in fits])
    whole = written["summary"]["consensus of 3"]["acc"]
    assert whole["sd"] == pytest.approx(0.0, abs=1e-12)
    assert whole["mean"] == pytest.approx(clustering_scores(labels, everything.argmax(1))["acc"])
    assert set(written["summary"]) == {"single", "consensus of 2", "consensus of 3"}
    assert np.isfinite(written["summary"]["consensus of 2"]["nmi"]["mean"])


def test_ranked_by_a_criterion_keeps_its_best_and_the_consensus_of_its_top(tmp_path,
                                                                          monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    script = importlib.import_module("consensus_subsets")
    images, labels, runs, fits = _three_run_folders(tmp_path, data_seed=2)
    out = tmp_path / "table.json"
    monkeypatch.setattr(sys, "argv", ["consensus_subsets.py", *map(str, runs), "--sizes", "3",
                                      "--draws", "2", "--ranked-by", "confidence", "--top", "2",
                                      "--json", str(out)])
    script.main()
    written = json.loads(out.read_text())
    scores = [-float(np.mean(f.predict(images).entropy)) for f in fits]
    assert written["scores"] == pytest.approx(scores)
    order = np.argsort(scores)[::-1]
    best = clustering_scores(labels, fits[order[0]].predict(images).labels)["acc"]
    assert written["summary"]["best of 3 by confidence"]["acc"]["mean"] == pytest.approx(best)
    top2 = consensus_responsibilities([fits[i].predict(images).responsibilities
                                       for i in order[:2]])
    assert written["summary"]["top 2 of 3 by confidence"]["acc"]["mean"] == pytest.approx(
        clustering_scores(labels, top2.argmax(1))["acc"])
    # --top without a ranking, or a criterion that scores a fit against the others, is refused
    for bad in (["--top", "2"], ["--ranked-by", "agreement"]):
        monkeypatch.setattr(sys, "argv", ["consensus_subsets.py", *map(str, runs), *bad])
        with pytest.raises(SystemExit):
            script.main()
