"""Run folders that never lie (issue 15): refusing to mix two runs in one folder, --overwrite
clearing every old artefact, the lock, and a resume that cannot falsify the record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import binary_blobs

from varclust import VarClust
from varclust.cli import main
from varclust.inference import CheckpointError
from varclust.inference.run_folder import (
    RunFolderError,
    RunLock,
    check_resume_record,
    data_fingerprint,
)

TINY = dict(latent_dim=2, hidden=(8,), pretrain_epochs=1, batch_size=32, seed=0, device="cpu")
CLI_TINY = ["--dataset", "digits", "--epochs", "1", "--pretrain-epochs", "1", "--hidden", "32",
            "--latent-dim", "4", "--quiet"]


def blobs(n: int = 90, seed: int = 0) -> np.ndarray:
    return binary_blobs(n, seed=seed)[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    VarClust(3, epochs=2, **TINY).fit(blobs(), out_dir=out, progress=False)
    return out


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file():
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


# ---------------------------------------------------------------- 1. stale artefacts
def test_cli_fit_into_an_old_run_is_refused_and_overwrite_clears_it(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["fit", *CLI_TINY, "--out", str(out)]) == 0
    assert main(["evaluate", str(out)]) == 0
    assert main(["sample", str(out), "--num", "2"]) == 0
    (out / ".metrics.json.abc123.tmp").write_text("half")  # a write killed midway
    assert main(["report", str(out), "--num-data", "60", "--num-samples", "4",
                 "--importance-samples", "2"]) == 0
    def artefacts() -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != ".varclust.lock"}

    before = artefacts()
    assert {"evaluation.json", "report", "samples.png", "samples_seed0.png"} <= set(before)
    capsys.readouterr()
    assert main(["fit", *CLI_TINY, "--out", str(out), "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert artefacts() == before  # untouched
    assert main(["fit", *CLI_TINY, "--out", str(out), "--seed", "1", "--overwrite"]) == 0
    names = {p.name for p in out.iterdir()}
    assert not names & {"evaluation.json", "report", "samples_seed0.png",
                        ".metrics.json.abc123.tmp"}  # no stale artefacts
    assert json.loads((out / "metrics.json").read_text())["config"]["seed"] == 1


def test_python_fit_into_an_old_run_is_refused(run, tmp_path):
    copy = copy_run(run, tmp_path / "copy")
    with pytest.raises(RunFolderError, match="already holds a run"):
        VarClust(3, epochs=1, **TINY).fit(blobs(), out_dir=copy, progress=False)
    (copy / "evaluation.json").write_text("{}")
    VarClust(3, epochs=1, **TINY).fit(blobs(), out_dir=copy, progress=False, overwrite=True)
    assert not (copy / "evaluation.json").exists()
    assert not (copy / "checkpoint.prev.pt").exists() or len(
        json.loads((copy / "metrics.json").read_text())["history"]) == 1


@pytest.mark.parametrize("name, options, says", [
    ("notes.txt", {"overwrite": True}, "did not write.*notes.txt"),  # never removed
    ("evaluation.json", {"resume": True}, "no checkpoint to resume.*--overwrite"),
])
def test_folders_that_cannot_take_the_fit(tmp_path, name, options, says):
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_text("keep me")
    with pytest.raises(RunFolderError, match=says):
        VarClust(3, epochs=1, **TINY).fit(blobs(), out_dir=out, progress=False, **options)
    assert (out / name).read_text() == "keep me"


def test_out_pointing_at_a_file_says_so(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["fit", *CLI_TINY, "--out", str(target)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


# ---------------------------------------------------------------- 2. the lock
HOLDER = """
import sys, time
from varclust.inference.run_folder import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "locked"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=f"in use by another varclust process "
                           rf"\(pid {proc.pid}\)"):
            VarClust(3, epochs=1, **TINY).fit(blobs(), out_dir=out, progress=False)
        assert main(["fit", *CLI_TINY, "--out", str(out)]) == 2
        assert f"pid {proc.pid}" in capsys.readouterr().err
        assert main(["evaluate", str(out)]) == 2  # nor written by evaluate meanwhile
        assert f"pid {proc.pid}" in capsys.readouterr().err
    finally:
        proc.kill()
        proc.wait()
    # the holder died: the lock went with it
    VarClust(3, epochs=1, **TINY).fit(blobs(), out_dir=out, progress=False)


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    with RunLock(tmp_path / "r"), RunLock(tmp_path / "r"):
        pass
    with RunLock(tmp_path / "r"):
        pass


# ---------------------------------------------------------------- 5. resume keeps the record
@pytest.mark.parametrize("change, named", [
    ({"batch_size": 16}, "batch_size"), ({"seed": 5}, "seed"),
    ({"learning_rate": 0.05}, "learning_rate"), ({"pretrain_epochs": 3}, "pretrain_epochs"),
    ({"precision": "bfloat16"}, "precision"),
])
def test_resume_refuses_run_defining_changes(run, tmp_path, change, named):
    copy = copy_run(run, tmp_path / "copy")
    before = (copy / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointError, match=f"would make its record false.*{named}"):
        VarClust(3, **{**TINY, "epochs": 3, **change}).fit(blobs(), out_dir=copy, resume=True,
                                                           progress=False)
    assert (copy / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("data", [blobs(n=93), blobs(seed=1)], ids=["other N", "same N"])
def test_resume_refuses_other_data(run, tmp_path, data):
    copy = copy_run(run, tmp_path / "copy")
    with pytest.raises(CheckpointError, match="record false.*data: checkpoint N=90"):
        VarClust(3, epochs=3, **TINY).fit(data, out_dir=copy, resume=True, progress=False)


def test_resume_records_each_segment(run, tmp_path):
    copy = copy_run(run, tmp_path / "copy")
    VarClust(3, epochs=3, **TINY).fit(blobs(), out_dir=copy, resume=True, progress=False)
    metrics = json.loads((copy / "metrics.json").read_text())
    assert [(s["start_epoch"], s["epochs"]) for s in metrics["segments"]] == [(0, 2), (2, 3)]
    assert metrics["data"]["num_data"] == 90 and metrics["data"]["shape"] == [12]


def test_cli_resume_takes_the_runs_settings_and_refuses_typed_changes(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["fit", *CLI_TINY, "--out", str(out)]) == 0
    # the digits preset says 100 pretraining epochs; the run had 1: resume keeps the run's
    assert main(["fit", "--dataset", "digits", "--out", str(out), "--epochs", "2", "--quiet",
                 "--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["pretrain_epochs"] == 1 and len(metrics["history"]) == 2
    capsys.readouterr()
    assert main(["fit", "--dataset", "digits", "--out", str(out), "--epochs", "3", "--quiet",
                 "--resume", "--batch-size", "64", "--seed", "5", "--lr", "0.05"]) == 2
    err = capsys.readouterr().err
    assert "batch_size" in err and "seed" in err and "learning_rate" in err


# ---------------------------------------------------------------- 9. messages
def test_evaluate_reads_the_dataset_from_the_checkpoint_alone(tmp_path, capsys):
    out = tmp_path / "only"
    assert main(["fit", *CLI_TINY, "--out", str(out)]) == 0
    for p in out.iterdir():
        if p.name not in ("checkpoint.pt", ".varclust.lock"):
            p.unlink()
    assert main(["evaluate", str(out)]) == 0
    assert json.loads((out / "evaluation.json").read_text())["num_data"] == 1797


def test_both_checkpoints_corrupt_says_what_to_do(run, tmp_path, capsys):
    copy = copy_run(run, tmp_path / "copy")
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (copy / name).write_bytes(b"garbage")
    assert main(["evaluate", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.prev.pt" in err and "--overwrite" in err


def test_lock_file_is_released_after_a_fit(tmp_path):
    out = tmp_path / "done"
    VarClust(3, epochs=1, **TINY).fit(blobs(), out_dir=out, progress=False)
    start = time.time()
    with RunLock(out):  # would raise if the fit had kept it
        assert time.time() - start < 5


def test_semi_supervised_resume_refuses_other_labelled_data(tmp_path):
    x, y = blobs(), np.arange(90) % 3
    first, other = np.zeros(90, dtype=bool), np.zeros(90, dtype=bool)
    first[:9], other[9:18] = True, True
    out = tmp_path / "semi"
    VarClust(3, epochs=1, **TINY).fit(x, y, labelled=first, out_dir=out, progress=False)
    with pytest.raises(CheckpointError, match="labelled data: checkpoint 9 labels"):
        VarClust(3, epochs=2, **TINY).fit(x, y, labelled=other, out_dir=out, resume=True,
                                          progress=False)
    with pytest.raises(CheckpointError, match="vs no labels"):
        VarClust(3, epochs=2, **TINY).fit(x, y, out_dir=out, resume=True, progress=False)
    VarClust(3, epochs=2, **TINY).fit(x, y, labelled=first, out_dir=out, resume=True,
                                      progress=False)


def test_two_cli_fits_on_one_folder_the_second_is_refused(tmp_path):
    out = tmp_path / "shared"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "varclust.cli", "fit", *CLI_TINY,
                              "--epochs", "400", "--out", str(out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint.pt").exists():
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-m", "varclust.cli", "fit", *CLI_TINY,
                                 "--out", str(out)], env=env, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 2
        assert f"in use by another varclust process (pid {first.pid})" in second.stderr
        assert "done" not in second.stdout
    finally:
        first.kill()
        first.wait()


def test_resume_removes_what_describes_an_older_state(run, tmp_path):
    copy = copy_run(run, tmp_path / "copy")
    (copy / "evaluation.json").write_text('{"acc": 0.62}')
    (copy / "report").mkdir()
    (copy / "report" / "index.html").write_text("old")
    (copy / "samples_seed0.png").write_bytes(b"old")
    with pytest.raises(CheckpointError):  # a refused resume changes nothing
        VarClust(3, **{**TINY, "epochs": 3, "seed": 9}).fit(blobs(), out_dir=copy, resume=True,
                                                            progress=False)
    assert (copy / "evaluation.json").exists() and (copy / "report").exists()
    VarClust(3, epochs=3, **TINY).fit(blobs(), out_dir=copy, resume=True, progress=False)
    names = {p.name for p in copy.iterdir()}
    assert names == {"checkpoint.pt", "checkpoint.prev.pt", "metrics.json"}


def test_a_file_setting_is_compared_by_content_only_where_the_checkpoint_holds_its_hash():
    targets = np.full((4, 2), 0.5, dtype=np.float32)
    x = torch.zeros(4, 1, 2, 2)
    saved = data_fingerprint(x, targets=targets)
    moved = {"consensus_file": "/new/place.npy"}
    # same content elsewhere: resumable
    check_resume_record({"consensus_file": "/old/place.npy"}, moved, saved,
                        data_fingerprint(x, targets=targets), Path("run"))
    # other content elsewhere: refused, naming the setting
    other = data_fingerprint(x, targets=targets[:, ::-1] * [[0.2, 1.8]])
    with pytest.raises(CheckpointError, match="consensus_file: the checkpoint's file held other"):
        check_resume_record({"consensus_file": "/old/place.npy"}, moved, saved, other, Path("run"))
    # a checkpoint without the targets' hash (older varclust) keeps the path check
    older = data_fingerprint(x)
    with pytest.raises(CheckpointError, match="consensus_file: checkpoint '/old/place.npy'"):
        check_resume_record({"consensus_file": "/old/place.npy"}, moved, older,
                            data_fingerprint(x, targets=targets), Path("run"))
