"""Exact resume: a fit killed with SIGKILL mid-epoch and resumed ends with the same parameters,
bit for bit, as an uninterrupted fit (CPU, one thread, deterministic algorithms)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from varclust import VarClust
from varclust.inference.checkpoint import load_checkpoint, previous_path

sys.path.insert(0, str(Path(__file__).parent))
import resume_child  # noqa: E402

CHILD = Path(__file__).parent / "resume_child.py"
KILL_AFTER = 13  # epoch 2, batch 5: the last checkpoint is epoch 2, batch 3 (every 3 steps)


def run_child(out: Path, kill_after: int, resume: bool) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(CHILD), str(out), str(kill_after), str(int(resume))],
                          env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode not in (0, -signal.SIGKILL):
        pytest.fail(proc.stdout + proc.stderr)
    return proc.returncode


@pytest.fixture
def deterministic():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)


def fit_in_process(out: Path | None, resume: bool = False) -> VarClust:
    return VarClust(**resume_child.SETTINGS).fit(
        resume_child.data(), out_dir=out, resume=resume, progress=False
    )


def assert_same_state(a: dict, b: dict) -> None:
    for part in ("model", "guide"):
        assert a[part].keys() == b[part].keys()
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), (part, name)
    for sa, sb in zip(a["trainer"]["optimizer"]["state"].values(),
                      b["trainer"]["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["trainer"]["scheduler"] == b["trainer"]["scheduler"]
    assert [(h["epoch"], h["elbo"]) for h in a["history"]] == [
        (h["epoch"], h["elbo"]) for h in b["history"]]


def test_sigkill_mid_epoch_then_resume_is_bitwise_exact(tmp_path: Path, deterministic) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    fit_in_process(whole)
    assert run_child(killed, KILL_AFTER, resume=False) == -signal.SIGKILL

    state = load_checkpoint(killed / "checkpoint.pt")
    assert (state["epoch"], state["trainer"]["position"]["step"]) == (1, 3)  # mid-epoch 2
    assert len(state["history"]) == 1
    spare = tmp_path / "spare"
    shutil.copytree(killed, spare)

    assert run_child(killed, 0, resume=True) == 0
    expected = load_checkpoint(whole / "checkpoint.pt")
    assert_same_state(load_checkpoint(killed / "checkpoint.pt"), expected)

    # the newest checkpoint damaged as well: resume falls back to checkpoint.prev.pt (the end of
    # epoch 1) and still ends exactly where the uninterrupted run did
    data = (spare / "checkpoint.pt").read_bytes()
    (spare / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    previous = load_checkpoint(previous_path(spare / "checkpoint.pt"))["trainer"]["position"]
    assert (previous["epoch"], previous["step"]) == (1, 0)
    fit_in_process(spare, resume=True)
    assert_same_state(load_checkpoint(spare / "checkpoint.pt"), expected)
