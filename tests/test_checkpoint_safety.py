"""Checkpoint files: the previous good copy kept and used when the newest is damaged (never when
it is unsafe), NaN payloads and full disks never replace a good checkpoint."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from varclust import VarClust
from varclust.inference import checkpoint as ckpt
from varclust.inference.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    load_latest_checkpoint,
    previous_path,
    save_checkpoint,
)


class CreatesMarker:
    """Unpickling this calls open(marker, "w"): the file appears only if pickled code runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def payload(value: float = 1.0) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "epoch": 1}


def test_crafted_checkpoint_is_not_passed_over_for_the_previous_one(tmp_path: Path) -> None:
    """test_checkpoint.py covers refusing crafted files; here a good checkpoint.prev.pt lies
    beside one, and resuming must stop on it rather than quietly use the older file."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(previous_path(path), payload(), keep_previous=False)
    torch.save({"format": ckpt.CHECKPOINT_FORMAT, "model": CreatesMarker(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="io.open.*nothing in it was executed"):
        load_latest_checkpoint(path)
    x = np.random.default_rng(0).uniform(size=(20, 6)).astype(np.float32)
    with pytest.raises(UnsafeCheckpointError):
        VarClust(2, epochs=1, pretrain_epochs=0, hidden=(4,), device="cpu").fit(
            x, out_dir=tmp_path, resume=True, progress=False)
    assert not marker.exists()


def test_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, payload(1.0))
    assert not previous_path(path).exists()
    save_checkpoint(path, payload(2.0))
    save_checkpoint(path, payload(3.0))
    assert previous_path(path).name == "checkpoint.prev.pt"
    assert float(load_checkpoint(path)["model"]["w"][0]) == 3.0
    assert float(load_checkpoint(previous_path(path))["model"]["w"][0]) == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, payload(1.0))
    save_checkpoint(path, payload(2.0))
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    else:
        path.unlink()
    state, used = load_latest_checkpoint(path)
    assert used == previous_path(path)
    assert float(state["model"]["w"][0]) == 1.0
    if damage != "delete":
        with pytest.raises(CheckpointError, match="checkpoint.pt"):
            load_checkpoint(path)


def test_load_uses_the_previous_checkpoint_when_the_newest_is_damaged(tmp_path: Path) -> None:
    x = np.random.default_rng(0).uniform(size=(40, 6)).astype(np.float32)
    VarClust(2, epochs=2, pretrain_epochs=0, hidden=(4,), device="cpu").fit(
        x, out_dir=tmp_path, progress=False)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:100])
    loaded = VarClust.load(tmp_path, device="cpu")
    assert len(loaded.history) == 1  # the copy written after epoch 1
    assert loaded.predict(x).responsibilities.shape == (40, 2)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_payload_never_replaces_a_good_checkpoint(tmp_path: Path, bad: float) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, payload(1.0))
    save_checkpoint(path, payload(2.0))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    nested = {"model": {"w": torch.ones(3)}, "trainer": {"optimizer": {"state": {0: {
        "exp_avg": torch.tensor([0.0, bad])}}}}}
    for broken in (payload(bad), nested):
        with pytest.raises(CheckpointError, match="NaN or infinite.*last good checkpoint"):
            save_checkpoint(path, broken)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_full_disk_leaves_the_checkpoint_whole(tmp_path: Path, monkeypatch, fail_at: str) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, payload(1.0))
    save_checkpoint(path, payload(2.0))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.os, fail_at, no_space)
    with pytest.raises(OSError, match="could not write .*checkpoint.pt.*free some disk space") as e:
        save_checkpoint(path, payload(3.0))
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp files left
    assert float(load_checkpoint(path)["model"]["w"][0]) == 2.0
