"""Best of R fits by ELBO or by agreement: the choice never reads the labels; the
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
from varclust.selection import agreement_matrix, agreement_scores

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
    # the restarts folder is not a run: evaluate names the kept one
    assert main(["evaluate", str(out)]) == 2
    kept = restart_folder(out, record["chosen_seed"])
    assert f"holds restarts, not one run: the fit kept by restarts.json is {kept}" in (
        capsys.readouterr().err)


def test_select_after_scores_part_way_and_continues_only_the_chosen_fit():
    x, config = _data(), TINY.replace(epochs=4, seed=5)
    result = fit_restarts(config, x, restarts=3, select_after=2, progress=False)
    assert result.select_after == 2 and [c.epochs for c in result.candidates] == [2, 2, 2]
    assert result.chosen == int(np.argmax([c.elbo for c in result.candidates]))
    lengths = [len(f.history) for f in result.fits]
    assert lengths[result.chosen] == 4 and lengths.count(2) == 2
    # the kept fit is the very fit a single run of its seed gives (the continuation is exact)
    seed = result.candidates[result.chosen].seed
    single = VarClust(config=config.replace(seed=seed)).fit(x, progress=False)
    assert [h["elbo"] for h in result.best.history] == [h["elbo"] for h in single.history]
    # a candidate's score is its ELBO after 2 epochs: the 2-epoch fit of its seed
    two = VarClust(config=config.replace(seed=5, epochs=2)).fit(x, progress=False)
    assert score_by_elbo(two, x) == pytest.approx(result.candidates[0].elbo, rel=1e-6)
    # the labels never enter the choice
    labelled = fit_restarts(config, x, np.arange(60) % 3, restarts=3, select_after=2,
                            progress=False)
    assert labelled.chosen == result.chosen


def test_select_after_records_the_choice_and_resume_reuses_it(tmp_path):
    x, out, config = _data(), tmp_path / "runs", TINY.replace(epochs=3)
    result = fit_restarts(config, x, restarts=2, select_after=1, out_dir=out, progress=False)
    record = json.loads((out / RESTARTS_FILE).read_text())
    assert record["select_after"] == 1 and record["chosen_continued"]
    assert record["chosen_seed"] == result.candidates[result.chosen].seed
    assert [c["epochs"] for c in record["candidates"]] == [1, 1]
    other = 1 - result.chosen
    assert len(VarClust.load(restart_folder(out, other), device="cpu").history) == 1
    # resume: the recorded choice stands; the chosen fit is continued to the new length and
    # the other candidate is not refitted
    again = fit_restarts(config.replace(epochs=4), x, restarts=2, select_after=1, out_dir=out,
                         resume=True, progress=False)
    assert again.chosen == result.chosen
    assert len(again.best.history) == 4 and len(again.fits[other].history) == 1



def test_a_moved_restarts_folder_resumes_its_own_candidates(tmp_path):
    """restarts.json names the candidates' folders inside the restarts folder, so a copy (or
    a command run from another directory) resumes the candidates where they now are."""
    import shutil

    x, out, config = _data(), tmp_path / "runs", TINY.replace(epochs=3)
    fit_restarts(config, x, restarts=2, select_after=1, out_dir=out, progress=False)
    record = json.loads((out / RESTARTS_FILE).read_text())
    assert record["chosen_folder"] == f"seed_{record['chosen_seed']}"
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    again = fit_restarts(config.replace(epochs=4), x, restarts=2, select_after=1,
                         out_dir=moved, resume=True, progress=False)
    chosen = again.candidates[again.chosen]
    assert chosen.folder == str(restart_folder(moved, chosen.seed))
    assert len(VarClust.load(chosen.folder, device="cpu").history) == 4


def test_select_after_refuses_what_it_cannot_do(tmp_path, capsys):
    for bad in (0, 2, 5):
        with pytest.raises(ValueError, match="select_after must be between 1 and"):
            fit_restarts(TINY, _data(), restarts=2, select_after=bad, progress=False)
    with pytest.raises(ValueError, match="select_after counts SVI epochs"):
        fit_restarts(TINY.replace(method="em"), _data(), restarts=2, select_after=1)
    common = ["fit", "--dataset", "digits", "--out", str(tmp_path / "r"), "--epochs", "2"]
    assert main([*common, "--select-after", "1"]) == 2
    assert "--select-after chooses among restarts" in capsys.readouterr().err
    assert main([*common, "--restarts", "2", "--select-after", "2"]) == 2
    assert "select_after must be between 1 and epochs - 1 = 1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_cli_select_after(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["fit", "--dataset", "digits", "--out", str(out), "--restarts", "2",
                 "--select-after", "1", "--epochs", "2", "--hidden", "32", "--latent-dim", "3",
                 "--pretrain-epochs", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / RESTARTS_FILE).read_text())
    assert "after 1 epochs, and only it continued" in printed
    assert "at epoch 1; after epoch 2" in printed and "at epoch 1; after epoch 1" in printed
    chosen = restart_folder(out, record["chosen_seed"])
    assert len(VarClust.load(chosen, device="cpu").history) == 2
    assert (chosen / "samples.png").exists()


def test_cli_select_after_resume_takes_the_length_from_the_command(tmp_path):
    """The candidates of a part-way choice are E-epoch fits: --resume must not read the fit's
    length from the first candidate's checkpoint, but from the command (here its --config)."""
    out, settings = tmp_path / "r", tmp_path / "settings.json"
    command = ["fit", "--dataset", "digits", "--out", str(out), "--restarts", "2",
               "--select-after", "1", "--config", str(settings), "--quiet"]
    base = {"hidden": [32], "latent_dim": 3, "pretrain_epochs": 1}
    settings.write_text(json.dumps({**base, "epochs": 2}))
    assert main(command) == 0
    settings.write_text(json.dumps({**base, "epochs": 3}))
    assert main([*command, "--resume"]) == 0
    chosen = json.loads((out / RESTARTS_FILE).read_text())["chosen_seed"]
    lengths = {s: len(VarClust.load(restart_folder(out, s), device="cpu").history) for s in (0, 1)}
    assert lengths == {chosen: 3, 1 - chosen: 1}


def test_agreement_scores_are_each_partitions_mean_ari_with_the_others():
    same, relabelled, crossed = [0, 0, 1, 1], [1, 1, 0, 0], [0, 1, 0, 1]
    # by hand: ARI(same, relabelled) = 1; for crossed against either, every cell of the 2 x 2
    # contingency table holds one datum: index 0, expected 2 * 2 / C(4, 2) = 2/3, max 2, so
    # ARI = (0 - 2/3) / (2 - 2/3) = -1/2
    ari = agreement_matrix([np.array(p) for p in (same, relabelled, crossed)])
    assert ari == pytest.approx(np.array([[1, 1, -0.5], [1, 1, -0.5], [-0.5, -0.5, 1]]))
    scores = agreement_scores(ari)
    assert scores == pytest.approx([(1 - 0.5) / 2, (1 - 0.5) / 2, -0.5])
    with pytest.raises(ValueError, match="at least 2"):
        agreement_scores(agreement_matrix([np.array(same)]))


def test_select_by_agreement_keeps_the_medoid_partition_and_records_the_criterion(tmp_path):
    x, out = _data(), tmp_path / "runs"
    result = fit_restarts(TINY.replace(seed=5), x, restarts=3, select_by="agreement",
                          out_dir=out, progress=False)
    partitions = [np.asarray(f.predict(x).labels) for f in result.fits]
    expected = agreement_scores(agreement_matrix(partitions))
    assert [c.score for c in result.candidates] == pytest.approx(expected)
    assert result.chosen == int(np.argmax(expected))
    # every candidate's ELBO is still recorded, and the record names the criterion
    record = json.loads((out / RESTARTS_FILE).read_text())
    assert record["select_by"] == "agreement" and "adjusted Rand" in record["criterion"]
    assert [c["elbo"] for c in record["candidates"]] == pytest.approx(
        [score_by_elbo(f, x) for f in result.fits], rel=1e-6)
    assert record["chosen_seed"] == result.candidates[result.chosen].seed
    # the labels never enter the choice
    labelled = fit_restarts(TINY.replace(seed=5), x, np.arange(60) % 3, restarts=3,
                            select_by="agreement", progress=False)
    assert labelled.chosen == result.chosen
    with pytest.raises(ValueError, match="needs at least 3 restarts"):
        fit_restarts(TINY, x, restarts=2, select_by="agreement", progress=False)
    with pytest.raises(ValueError, match="unknown selection criterion 'acc'; choose one of"):
        fit_restarts(TINY, x, restarts=3, select_by="acc", progress=False)


def test_cli_select_by_agreement(tmp_path, capsys):
    out = tmp_path / "r"
    common = ["fit", "--dataset", "digits", "--out", str(out), "--hidden", "32", "--latent-dim",
              "3", "--pretrain-epochs", "1", "--epochs", "1", "--quiet", "--select-by",
              "agreement"]
    assert main([*common, "--restarts", "3"]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / RESTARTS_FILE).read_text())
    assert record["select_by"] == "agreement"
    assert "clusters agree most with the others'" in printed and ", agreement " in printed
    assert f"kept seed {record['chosen_seed']}" in printed
    for restarts, message in (("2", "needs at least 3 restarts"),
                              ("1", "--select-by chooses among restarts; give --restarts R "
                                    "(R >= 3)")):
        assert main([*common, "--restarts", restarts, "--out", str(tmp_path / restarts)]) == 2
        assert message in capsys.readouterr().err
    # confidence needs only two fits to choose between, and its refusal says so
    confidence = [*common[:-1], "confidence", "--restarts", "1", "--out", str(tmp_path / "c")]
    assert main(confidence) == 2
    assert "(R >= 2)" in capsys.readouterr().err


def test_select_by_confidence_keeps_the_lowest_mean_entropy():
    x = _data()
    result = fit_restarts(TINY.replace(seed=5), x, restarts=2, select_by="confidence",
                          progress=False)
    entropies = [float(np.mean(f.predict(x).entropy)) for f in result.fits]
    assert [c.score for c in result.candidates] == pytest.approx([-e for e in entropies])
    assert result.chosen == int(np.argmin(entropies))
    labelled = fit_restarts(TINY.replace(seed=5), x, np.zeros(60, dtype=int), restarts=2,
                            select_by="confidence", progress=False)
    assert labelled.chosen == result.chosen
