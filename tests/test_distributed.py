"""Data-parallel SVI over 2 gloo processes on the CPU agrees with one process.

One torchrun launch (tests/ddp_worker.py) serves every test here: it is the slow part.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_worker import (
    GLOBAL_BATCH,
    LEARNING_RATE,
    NUM_DATA,
    mixture_config,
    one_step_problem,
    revival_config,
    synthetic_mixture,
    umap_graph_config,
)

from varclust import VarClust, cluster_accuracy
from varclust.cli import main as cli_main
from varclust.inference import SVITrainer
from varclust.inference.distributed import DistributedContext, rank_batches

WORKER = Path(__file__).with_name("ddp_worker.py")
SRC = Path(__file__).resolve().parents[1] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    """Run the worker on 2 gloo processes; return each rank's results."""
    out = tmp_path_factory.mktemp("ddp")
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(WORKER), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_ranks_take_disjoint_shards_of_one_shuffle():
    shards = [torch.cat(list(rank_batches(NUM_DATA, GLOBAL_BATCH, 3, 5,
                                          DistributedContext(r, 2, torch.device("cpu"), "gloo"))))
              for r in range(2)]
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    assert sorted(torch.cat(shards).tolist()) == list(range(NUM_DATA))
    again = next(rank_batches(NUM_DATA, GLOBAL_BATCH, 3, 6,
                              DistributedContext(0, 2, torch.device("cpu"), "gloo")))
    assert not torch.equal(again, shards[0][: GLOBAL_BATCH // 2])  # a new epoch reshuffles
    with pytest.raises(ValueError, match="multiple of 2"):
        DistributedContext(0, 2, torch.device("cpu"), "gloo").per_rank_batch(15)


def test_one_step_on_two_ranks_equals_one_process_on_the_concatenated_batch(two_ranks):
    torch.set_default_dtype(torch.float64)
    try:
        model, guide, x = one_step_problem()
        trainer = SVITrainer(model, guide, LEARNING_RATE)
        idx = torch.cat([r["indices"] for r in two_ranks])
        assert len(idx) == GLOBAL_BATCH and len(set(idx.tolist())) == GLOBAL_BATCH
        before = {k: v.detach().clone() for k, v in trainer.elbo.named_parameters()}
        loss = trainer.step(x[idx], idx, NUM_DATA)
        after = dict(trainer.elbo.named_parameters())
    finally:
        torch.set_default_dtype(torch.float32)
    # each rank's loss is scaled by N / (its half batch): their mean is the global loss
    mean_rank_loss = (two_ranks[0]["loss"] + two_ranks[1]["loss"]) / 2
    assert mean_rank_loss.item() == pytest.approx(loss.item(), rel=1e-10)
    assert set(two_ranks[0]["params"]) == set(after)
    assert any(k.startswith("model.prior.") for k in after)  # the mixture is all-reduced too
    for name, value in after.items():
        for rank in two_ranks:
            torch.testing.assert_close(rank["params"][name], value.detach(), atol=1e-5, rtol=0)
        assert not torch.equal(value, before[name]), f"{name} did not move"


def test_two_ranks_train_to_the_same_accuracy_as_one_process(two_ranks):
    x, y = synthetic_mixture()
    single = VarClust(**mixture_config()).fit(x, y, progress=False)
    acc_single = cluster_accuracy(y.numpy(), single.predict(x).labels)
    acc_ranks = [r["acc"] for r in two_ranks]
    assert acc_ranks[0] == acc_ranks[1]  # ranks hold the same model
    assert acc_single >= 0.95 and acc_ranks[0] >= 0.95
    assert abs(acc_ranks[0] - acc_single) <= 0.02
    assert len(two_ranks[0]["history"]) == mixture_config()["epochs"]
    assert "acc" in two_ranks[0]["history"][-1] and "acc" not in two_ranks[1]["history"][-1]


def test_ranks_hold_rank_zeros_parameters_after_reviving_clusters(two_ranks):
    """A move outside DDP's all-reduce (the split, on every rank from the whole data) leaves
    the ranks with one model: the same mixture, networks and guide on both."""
    history = two_ranks[0]["revival_history"]
    assert len(history) == revival_config()["epochs"]
    assert sum(h["revived_clusters"] for h in history) >= 1  # the move did act
    params = [rank["revival_params"] for rank in two_ranks]
    assert set(params[0]) == set(params[1])
    assert any(k.startswith("prior.") for k in params[0])  # the split mixture is compared too
    for name, value in params[0].items():
        torch.testing.assert_close(params[1][name], value, atol=1e-6, rtol=0)


def test_a_distributed_fit_resumed_mid_epoch_is_the_fit_run_through(two_ranks):
    """Every step draws from a stream of (seed, epoch, step, rank), so a fit stopped after its
    5th step and resumed from that checkpoint ends where the fit run through ends."""
    for rank in two_ranks:
        assert set(rank["resumed_params"]) == set(rank["through_params"])
        for name, value in rank["through_params"].items():
            torch.testing.assert_close(rank["resumed_params"][name], value, atol=0, rtol=0)


def test_ranks_hold_one_model_with_the_umap_graph_term(two_ranks):
    """The term encodes its edges' endpoints through the guide outside DDP's forward, on other
    edges on each rank: its gradient is all-reduced with the ELBO's (the ranks' parameters
    would drift apart otherwise), and the fit moves away from the one without the term."""
    pytest.importorskip("umap")
    params = [rank["umap_graph_params"] for rank in two_ranks]
    assert set(params[0]) == set(params[1])
    for name, value in params[0].items():
        torch.testing.assert_close(params[1][name], value, atol=1e-6, rtol=0)
    x, y = synthetic_mixture()
    plain = VarClust(**{**umap_graph_config(), "umap_graph": 0.0}).fit(x, y, progress=False)
    assert not all(torch.allclose(value, params[0][name], atol=1e-3)
                   for name, value in plain.guide.named_parameters())


def test_distributed_flag_without_torchrun_says_how_to_launch(tmp_path, monkeypatch, capsys):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    code = cli_main(["fit", "--dataset", "digits", "--out", str(tmp_path / "run"),
                     "--distributed", "--device", "cpu", "--quiet"])
    assert code == 2
    assert "torchrun --nproc_per_node" in capsys.readouterr().err
