"""Checkpoints: resume, load, refuse other models, refuse pickled code, refuse corrupt files."""

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import binary_blobs

from varclust import VarClust
from varclust.inference import CheckpointError, load_checkpoint, save_checkpoint
from varclust.inference.checkpoint import CHECKPOINT_FORMAT

SETTINGS = dict(latent_dim=2, hidden=(16,), pretrain_epochs=2, batch_size=32, seed=3, device="cpu")


def data(n: int = 90, seed: int = 0) -> np.ndarray:
    """Three blobs of 12-pixel binary-ish images."""
    return binary_blobs(n, seed=seed)[0]


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    x = data()
    vc = VarClust(3, epochs=2, **SETTINGS)
    vc.fit(x, out_dir=out, progress=False, metadata={"tag": "t"})
    return out, x, vc


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("checkpoint.pt", "metrics.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_fit_writes_checkpoint_and_metrics(two_epoch_run):
    out, _, vc = two_epoch_run
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["format"] == CHECKPOINT_FORMAT
    assert state["phase"] == "train" and state["epoch"] == 2
    assert state["history"] == vc.history and len(vc.history) == 2
    assert state["metadata"] == {"tag": "t"}
    summary = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    assert summary["config"]["num_clusters"] == 3
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]  # no temporary files left


def test_resume_continues_to_more_epochs(two_epoch_run, tmp_path):
    out, x, first = two_epoch_run
    run = copy_run(out, tmp_path / "run")
    saved = load_checkpoint(run / "checkpoint.pt")["history"]
    vc = VarClust(3, epochs=4, **SETTINGS).fit(x, out_dir=run, resume=True, progress=False)
    assert [h["epoch"] for h in vc.history] == [1, 2, 3, 4]
    assert vc.history[:2] == saved == first.history
    assert vc.pretrain_losses == first.pretrain_losses
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 4

    # the resumed run is the run that would have happened without the interruption
    straight = VarClust(3, epochs=4, **SETTINGS).fit(x, progress=False)
    np.testing.assert_allclose(
        [h["elbo"] for h in vc.history], [h["elbo"] for h in straight.history], rtol=1e-5
    )
    for a, b in zip(vc.model.state_dict().values(), straight.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_resume_without_checkpoint_starts_afresh(tmp_path):
    x = data()
    vc = VarClust(3, epochs=1, **SETTINGS)
    vc.fit(x, out_dir=tmp_path / "new", resume=True, progress=False)
    assert len(vc.history) == 1 and (tmp_path / "new" / "checkpoint.pt").exists()
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        VarClust(3, epochs=1, **SETTINGS).fit(x, resume=True, progress=False)


def test_load_predicts_like_the_fitted_object(two_epoch_run, tmp_path):
    out, x, vc = two_epoch_run
    loaded = VarClust.load(out, device="cpu")
    assert loaded.config == vc.config
    assert loaded.history == vc.history
    a, b = vc.predict(x), loaded.predict(x)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.responsibilities, b.responsibilities, atol=1e-6)
    # save() round-trips as well
    vc.save(tmp_path / "model.pt")
    again = VarClust.load(tmp_path / "model.pt", device="cpu")
    np.testing.assert_array_equal(again.predict(x).labels, a.labels)
    np.testing.assert_allclose(again.encode(x), vc.encode(x), atol=1e-6)


@pytest.mark.parametrize(
    "change, named",
    [
        ({"num_clusters": 4}, "num_clusters"),
        ({"latent_dim": 3}, "latent_dim"),
        ({"hidden": (8,)}, "hidden"),
    ],
)
def test_resume_refuses_a_different_model(two_epoch_run, tmp_path, change, named):
    out, x, _ = two_epoch_run
    run = copy_run(out, tmp_path / "run")
    before = (run / "checkpoint.pt").read_bytes()
    settings = {**SETTINGS, "epochs": 4, **change}
    k = settings.pop("num_clusters", 3)
    with pytest.raises(CheckpointError, match=f"different model.*{named}: checkpoint"):
        VarClust(k, **settings).fit(x, out_dir=run, resume=True, progress=False)
    assert (run / "checkpoint.pt").read_bytes() == before  # nothing was overwritten


def test_resume_refuses_other_data_shape(two_epoch_run, tmp_path):
    out, x, _ = two_epoch_run
    run = copy_run(out, tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"data shape: checkpoint \(12,\) vs \(6,\)"):
        VarClust(3, epochs=4, **SETTINGS).fit(x[:, :6], out_dir=run, resume=True, progress=False)


class Payload:
    """Unpickling this creates a marker file: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_object_inside_torch_save_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "x": Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refused to load .*pickled Python objects"):
        load_checkpoint(path)
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        VarClust.load(path)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_raw_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"format": CHECKPOINT_FORMAT, "x": Payload(marker)}))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()
    # the payload is live: plain unpickling would have run it
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_truncated_checkpoint_is_refused(two_epoch_run, tmp_path):
    out, x, _ = two_epoch_run
    whole = (out / "checkpoint.pt").read_bytes()
    for cut in (len(whole) // 2, 100, 0):
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(whole[:cut])
        with pytest.raises(CheckpointError, match="not a readable checkpoint"):
            load_checkpoint(path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError):
        VarClust(3, epochs=4, **SETTINGS).fit(x, out_dir=run, resume=True, progress=False)


def test_other_torch_files_are_not_checkpoints(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a varclust checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")
    save_checkpoint(path, {"a": torch.ones(2), "n": 3})
    state = load_checkpoint(path)
    assert state["n"] == 3 and torch.equal(state["a"], torch.ones(2))


def test_saving_a_fit_into_its_own_run_folder_keeps_the_run_resumable(tmp_path):
    """``vc.save(run, X, y)`` (what ``varclust evaluate`` asks of a run without its data) adds
    the data and metadata; the checkpoint keeps its optimiser, schedule and RNG state, so a
    resume is the uninterrupted fit."""
    x = data()
    y = np.arange(len(x)) % 3
    settings = dict(SETTINGS, lr_decay=0.5)
    full = VarClust(3, epochs=4, **settings).fit(x, progress=False)
    part = VarClust(3, epochs=2, **settings).fit(x, out_dir=tmp_path, progress=False,
                                                 metadata={"tag": "t"})
    part.save(tmp_path, x, y)
    resumed = VarClust(3, epochs=4, **settings).fit(x, out_dir=tmp_path, resume=True,
                                                    progress=False)
    for a, b in zip(full.guide.state_dict().values(), resumed.guide.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert resumed.metadata_["tag"] == "t"  # the run's metadata go on without retyping them
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["metadata"] == {"tag": "t", "data": "data.npy", "labels": "labels.npy"}


def test_latent_reliance_is_kept_in_the_checkpoint(tmp_path):
    vc = VarClust(3, epochs=1, **SETTINGS).fit(data(), progress=False)
    vc.latent_reliance = 0.125
    vc.save(tmp_path / "model.pt")
    assert VarClust.load(tmp_path / "model.pt").latent_reliance == 0.125


class _LoadedOnGPU:
    """Stands in for an RNG state tensor that ``torch.load(map_location="cuda")`` put on a GPU:
    numpy and PyTorch's RNG setters accept it only after ``.cpu()``."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def cpu(self) -> torch.Tensor:
        return self.tensor

    def numpy(self):
        raise TypeError("can't convert cuda:0 device type tensor to numpy")


def test_rng_state_loaded_onto_a_gpu_restores(monkeypatch):
    """A checkpoint resumed on CUDA is loaded with map_location="cuda": the RNG states come back
    to the CPU before numpy and PyTorch take them, and a state saved on more GPUs than this
    machine has restores those it has."""
    from varclust.inference.checkpoint import capture_rng_state, restore_rng_state

    torch.manual_seed(5)
    np.random.seed(5)
    state = capture_rng_state()
    expected = (torch.rand(2), np.random.rand(2))
    gpu_states = [torch.full((8,), i, dtype=torch.uint8) for i in range(2)]
    state["torch"] = _LoadedOnGPU(state["torch"])
    state["numpy"]["keys"] = _LoadedOnGPU(state["numpy"]["keys"])
    state["cuda"] = [_LoadedOnGPU(s) for s in gpu_states]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    restore_rng_state(state)
    torch.testing.assert_close(torch.rand(2), expected[0])
    np.testing.assert_array_equal(np.random.rand(2), expected[1])
    assert len(restored) == 1 and torch.equal(restored[0], gpu_states[0])
