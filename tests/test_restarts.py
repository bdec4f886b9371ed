"""Best of R fits by ELBO: the choice is the highest bound and never reads the labels; the
folder of candidates, its record, resume, and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from varclust import FitConfig, VarClust
from varclust.cli import main
from varclust.inference.run_folder import RunFolderError
from varclust.restarts import RESTARTS_FILE, fit_restarts, restart_folder, score_by_elbo

TINY = FitConfig(num_clusters=3, latent_dim=2, hidden=(16,), epochs=2, pretrain_epochs=1,
                 batch_size=32, device="cpu")


def _data(n: int = 60) -> torch.Tensor:
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0))


def test_fit_restarts_keeps_the_highest_elbo_and_the_labels_do_not_change_it():
    x = _data()
    result = fit_restarts(TINY.replace(seed=5), x, restarts=3, progress=False)
    assert [c.seed for c in result.candidates] == [5, 6, 7]
    assert [f.config.seed for f in result.fits] == [5, 6, 7]
    elbos = [c.elbo for c in result.candidates]
    assert result.chosen == int(np.argmax(elbos)) and result.best is result.fits[result.chosen]
    # each candidate's score is its own ELBO under the same noise
    assert score_by_elbo(result.fits[0], x) == pytest.approx(elbos[0], rel=1e-6)
    # two different label vectors: the same candidates, ELBOs and choice
    for y in (np.zeros(60, dtype=int), np.arange(60) % 3):
        labelled = fit_restarts(TINY.replace(seed=5), x, y, restarts=3, progress=False)
        assert labelled.chosen == result.chosen
        assert [c.elbo for c in labelled.candidates] == pytest.approx(elbos, rel=1e-6)


def test_restarts_write_candidate_folders_and_a_record_and_resume(tmp_path):
    x, out = _data(), tmp_path / "runs"
    result = fit_restarts(TINY, x, restarts=2, out_dir=out, progress=False)
    record = json.loads((out / RESTARTS_FILE).read_text())
    assert record["chosen_seed"] == result.candidates[result.chosen].seed
    assert [c["seed"] for c in record["candidates"]] == [0, 1]
    for seed in (0, 1):
        assert VarClust.load(restart_folder(out, seed), device="cpu").config.seed == seed
    # resume with one more epoch continues every candidate from its checkpoint
    longer = fit_restarts(TINY.replace(epochs=3), x, restarts=2, out_dir=out, resume=True,
                          progress=False)
    assert [len(f.history) for f in longer.fits] == [3, 3]
    # a second fit into the same folder is refused, as for one run, and the record stays
    with pytest.raises(RunFolderError, match="already holds a run"):
        fit_restarts(TINY, x, restarts=2, out_dir=out, progress=False)
    assert (out / RESTARTS_FILE).exists()


def test_restarts_refuse_bad_input(tmp_path):
    with pytest.raises(ValueError, match="restarts must be at least 1"):
        fit_restarts(TINY, _data(), restarts=0)
    single = tmp_path / "single"
    VarClust(config=TINY).fit(_data(), out_dir=single, progress=False)
    with pytest.raises(ValueError, match="holds a single run"):
        fit_restarts(TINY, _data(), restarts=2, out_dir=single, progress=False)


def test_cli_restarts(tmp_path, capsys):
    out = tmp_path / "r"
    common = ["fit", "--dataset", "digits", "--out", str(out), "--restarts", "2", "--hidden",
              "32", "--latent-dim", "3", "--pretrain-epochs", "1", "--quiet"]
    assert main([*common, "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / RESTARTS_FILE).read_text())
    assert f"kept seed {record['chosen_seed']}" in printed and "<- kept" in printed
    assert (restart_folder(out, record["chosen_seed"]) / "samples.png").exists()
    assert main([*common, "--epochs", "2", "--resume"]) == 0
    assert len(VarClust.load(restart_folder(out, 1), device="cpu").history) == 2
    capsys.readouterr()
    assert main([*common, "--restarts", "0"]) == 2
    assert "--restarts must be at least 1" in capsys.readouterr().err
