"""Pretraining is checkpointed (issue 15, defect 3): every epoch and every N batches; a fit
killed with SIGKILL inside pretraining resumes there and ends with the parameters of an
uninterrupted fit, bit for bit (CPU, one thread, deterministic algorithms)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from varclust import VarClust
from varclust.inference.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
import pretrain_resume_child as child  # noqa: E402
import resume_child  # noqa: E402
from test_resume import assert_same_state, deterministic  # noqa: E402, F401

CHILD = Path(__file__).parent / "pretrain_resume_child.py"


def run_child(out: Path, kill_after: int, resume: bool) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                          str(Path(__file__).parent),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(CHILD), str(out), str(kill_after),
                           str(int(resume))], env=env, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode not in (0, -signal.SIGKILL):
        pytest.fail(proc.stdout + proc.stderr)
    return proc.returncode


@pytest.mark.usefixtures("deterministic")
@pytest.mark.parametrize("kill_after, saved", [
    (13, (1, 3)),   # pretraining epoch 2, batch 5: the last checkpoint is epoch 2, batch 3
    (17, (2, 0)),   # pretraining epoch 3, batch 1: the checkpoint at the end of epoch 2
])
def test_sigkill_in_pretraining_then_resume_is_bitwise_exact(tmp_path, kill_after, saved):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    VarClust(**child.SETTINGS).fit(resume_child.data(), out_dir=whole, progress=False)
    assert run_child(killed, kill_after, resume=False) == -signal.SIGKILL

    state = load_checkpoint(killed / "checkpoint.pt")
    assert state["phase"] == "pretrain"
    assert (state["pretrainer"]["epoch"], state["pretrainer"]["step"]) == saved
    assert len(state["pretrain_losses"]) == saved[0]

    assert run_child(killed, 0, resume=True) == 0
    resumed, expected = load_checkpoint(killed / "checkpoint.pt"), load_checkpoint(
        whole / "checkpoint.pt")
    assert resumed["pretrain_losses"] == expected["pretrain_losses"]
    assert len(expected["pretrain_losses"]) == 4
    assert_same_state(resumed, expected)


def test_pretraining_is_checkpointed_every_epoch(tmp_path, monkeypatch):
    """Without --checkpoint-every, each pretraining epoch still writes a checkpoint."""
    from varclust.inference import checkpoint as ckpt

    phases = []
    real = ckpt.save_checkpoint

    def spy(path, payload, *a, **kw):
        phases.append((payload["phase"], payload["pretrainer"].get("epoch")))
        return real(path, payload, *a, **kw)

    import varclust.inference.persistence as persistence

    monkeypatch.setattr(persistence, "save_checkpoint", spy)
    settings = {**child.SETTINGS, "checkpoint_every_steps": 0, "epochs": 1}
    VarClust(**settings).fit(resume_child.data(), out_dir=tmp_path / "r", progress=False)
    assert phases == [("pretrain", 1), ("pretrain", 2), ("pretrain", 3), ("pretrain", 4),
                      ("init", None), ("train", None)]


def test_pretraining_resume_refuses_other_pretraining_settings(tmp_path):
    run = tmp_path / "r"
    assert run_child(run, 10, resume=False) == -signal.SIGKILL
    with pytest.raises(Exception, match="pretrain_lr"):
        VarClust(**{**child.SETTINGS, "pretrain_lr": 0.01}).fit(
            resume_child.data(), out_dir=run, resume=True, progress=False)


def test_loading_a_run_stopped_in_pretraining_warns(tmp_path, caplog):
    run = tmp_path / "r"
    assert run_child(run, 10, resume=False) == -signal.SIGKILL
    with caplog.at_level("WARNING", logger="varclust"):
        VarClust.load(run, device="cpu")
    assert any("stopped inside autoencoder pretraining (1 epochs done)" in r.getMessage()
               for r in caplog.records)


def test_pretrainer_takes_the_steps_of_minimise_over_epochs():
    """The fit's pretraining (Pretrainer) is the one benchmarks measured (init.py's loop)."""
    import copy

    from varclust.inference.init import AutoencoderLoss, minimise_over_epochs
    from varclust.inference.pretrain import Pretrainer

    vc = VarClust(**{**child.SETTINGS, "pretrain_epochs": 0, "epochs": 0})
    vc.fit(resume_child.data(), progress=False)
    x = vc._prepare(resume_child.data())
    a = AutoencoderLoss(vc.guide.encoder, vc.model.decoder, vc.model.likelihood)
    b = copy.deepcopy(a)
    torch.manual_seed(0)
    expected = minimise_over_epochs(a, x, 3, 16, 1e-3, 1)
    torch.manual_seed(0)
    assert Pretrainer(b, 1e-3, 16, 1).run(x, 3) == expected
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
