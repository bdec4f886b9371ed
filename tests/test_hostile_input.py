"""Hostile and broken input: corrupt data files, bad arrays and configs, unwritable or full output
folders. Each gives one clear error and leaves earlier outputs as they were."""

from __future__ import annotations

import errno
import gzip
import json
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import varclust.data.datasets as ds
from varclust import FitConfig, VarClust, load_dataset
from varclust.cli import main
from varclust.data import DatasetCorruptError
from varclust.inference import checkpoint as ckpt
from varclust.inference.checkpoint import CheckpointError

TINY = dict(num_clusters=2, latent_dim=2, hidden=(8,), pretrain_epochs=1, batch_size=16,
            device="cpu")
MNIST_RAW = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def idx_files(n: int = 4) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    images = [idx_bytes(rng.integers(0, 256, (n, 28, 28))) for _ in range(2)]
    labels = [idx_bytes(rng.integers(0, 10, n)) for _ in range(2)]
    return dict(zip(MNIST_RAW, [images[0], labels[0], images[1], labels[1]]))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def no_system_dirs(monkeypatch, tmp_path):
    for key in list(ds.SYSTEM_DIRS):
        monkeypatch.setitem(ds.SYSTEM_DIRS, key, [tmp_path / "no-system-copy"])


# ------------------------------------------------------------------------ data files
CORRUPTIONS = {
    "truncated": (lambda b: b[: len(b) - 100], r"is truncated: \d+ bytes where its header"),
    "cut in the header": (lambda b: b[:9], "truncated inside its header"),
    "trailing bytes": (lambda b: b + b"\0" * 7, "longer than its header says"),
    "not idx": (lambda b: b"<html>not found</html>" + b, "is not an IDX file"),
    "empty": (lambda b: b"", "is not an IDX file .*nothing"),
    "wrong rank": (lambda b: idx_bytes(np.zeros((4, 784))), "2-dimensional IDX array"),
    "fewer images": (lambda b: idx_bytes(np.zeros((3, 28, 28))), "3 images but .* 4 labels"),
}


@pytest.mark.parametrize("damage", CORRUPTIONS)
def test_corrupt_idx_file_is_named_with_the_fix(tmp_path, no_system_dirs, damage) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, data in idx_files().items():
        (raw / name).write_bytes(data)
    assert len(load_dataset("mnist", tmp_path, download=False)) == 8
    corrupt, pattern = CORRUPTIONS[damage]
    target = raw / MNIST_RAW[2]
    target.write_bytes(corrupt(target.read_bytes()))
    with pytest.raises(DatasetCorruptError, match=pattern) as err:
        load_dataset("mnist", tmp_path, download=True)  # no download attempted over it
    assert MNIST_RAW[2] in str(err.value) and "delete it" in str(err.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_gz_system_copy_leaves_no_partial_file(tmp_path, monkeypatch, damage) -> None:
    system = tmp_path / "system"
    system.mkdir()
    for name, data in idx_files().items():
        packed = gzip.compress(data)
        if name == MNIST_RAW[0]:
            packed = packed[: len(packed) // 2] if damage == "truncated" else b"\x1f\x8b" + bytes(
                range(256))
        (system / f"{name}.gz").write_bytes(packed)
    monkeypatch.setitem(ds.SYSTEM_DIRS, "fashion-mnist", [system])
    root = tmp_path / "root"
    with pytest.raises(DatasetCorruptError, match=f"{MNIST_RAW[0]}.gz is a truncated or corrupt"):
        load_dataset("fashion-mnist", root, download=False)
    raw = root / "FashionMNIST" / "raw"
    assert not any(p.name.startswith(MNIST_RAW[0]) for p in raw.iterdir())


def test_fits_started_together_on_a_fresh_cache_each_stage_the_data(tmp_path, monkeypatch):
    """Two processes unpacking the same system copy at once (two benchmark fits on a fresh
    machine) each write a temporary file of their own: a writer already in flight, whose
    temporary file is left beside the target, neither breaks nor is broken by this one."""
    from concurrent.futures import ThreadPoolExecutor

    system = tmp_path / "system"
    system.mkdir()
    files = idx_files(n=2000)
    for name, data in files.items():
        (system / f"{name}.gz").write_bytes(gzip.compress(data))
    monkeypatch.setitem(ds.SYSTEM_DIRS, "fashion-mnist", [system])
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    in_flight = {name: raw / f"{name}.part" for name in files}  # the old shared temp names
    for part in in_flight.values():
        part.write_bytes(b"another writer's half-written bytes")
    with ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(lambda _: len(load_dataset("fashion-mnist", tmp_path / "root",
                                                         download=False)), range(4)))
    assert sizes == [4000] * 4
    for name, data in files.items():
        assert (raw / name).read_bytes() == data
        assert in_flight[name].read_bytes() == b"another writer's half-written bytes"
    assert sorted(p.name for p in raw.iterdir()) == sorted([*files, *(
        p.name for p in in_flight.values())])  # no temporary file of ours is left


def test_cli_reports_a_corrupt_data_file_in_one_line(tmp_path, no_system_dirs, capsys) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, data in idx_files().items():
        (raw / name).write_bytes(data[:-1])
    code = main(["fit", "--dataset", "mnist", "--data-root", str(tmp_path), "--out",
                 str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is truncated" in err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------ a run folder under fire
@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A finished one-epoch fit: checkpoint.pt, checkpoint.prev.pt and metrics.json."""
    x = np.random.default_rng(0).uniform(size=(48, 6)).astype(np.float32)
    out = tmp_path_factory.mktemp("run")
    VarClust(epochs=1, **TINY).fit(x, out_dir=out, progress=False)
    assert set(folder_bytes(out)) == {"checkpoint.pt", "checkpoint.prev.pt", "metrics.json"}
    return out, x


def bad_fits(x: np.ndarray) -> dict:
    """Each: (settings, data, fit keywords, expected error, message pattern)."""
    return {
        "uint8 data": ({}, (x * 255).astype(np.uint8), {}, TypeError, "divide by 255"),
        "object array": ({}, np.array([[1, "a"]], dtype=object), {}, TypeError, "dtype object"),
        "rank 1": ({}, x[0], {}, ValueError, r"must have shape \(N, D\)"),
        "rank 5": ({}, x.reshape(48, 1, 1, 1, 6), {}, ValueError, "must have shape"),
        "empty": ({}, x[:0], {}, ValueError, "is empty"),
        "NaN": ({}, np.where(x > 0.9, np.nan, x), {}, ValueError, "NaN or infinite"),
        "out of range": ({}, x * 3, {}, ValueError, r"needs data in \[0.0, 1.0\]"),
        "float64 overflow": ({}, np.full((4, 6), 1e300), {}, ValueError, "NaN or infinite"),
        "K > N": ({"num_clusters": 60}, x, {}, ValueError, "exceeds the number of data"),
        "labels too short": ({}, x, {"y": np.zeros(3)}, ValueError, r"y must have shape"),
        "other model": ({"latent_dim": 3}, x, {"resume": True}, CheckpointError,
                        "latent_dim: checkpoint 2 vs 3"),
        "other data shape": ({}, x[:, :5], {"resume": True}, CheckpointError, "data shape"),
    }


BAD_FIT_NAMES = list(bad_fits(np.zeros((48, 6))))


@pytest.mark.parametrize("case", BAD_FIT_NAMES)
def test_bad_fit_input_is_refused_and_the_run_folder_kept(run_folder, case) -> None:
    out, x = run_folder
    before = folder_bytes(out)
    settings, data, kwargs, error, pattern = bad_fits(x)[case]
    with pytest.raises(error, match=pattern):
        VarClust(**{**TINY, "epochs": 2, **settings}).fit(data, out_dir=out, progress=False,
                                                           **kwargs)
    assert folder_bytes(out) == before


def test_unwritable_output_folder_is_refused_before_training(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    x = np.random.default_rng(0).uniform(size=(20, 6)).astype(np.float32)
    with pytest.raises(OSError, match="cannot create the output folder .*a-file/run"):
        VarClust(epochs=1, **TINY).fit(x, out_dir=blocker / "run", progress=False)
    assert blocker.read_text() == "not a folder"


def test_full_disk_mid_fit_keeps_the_last_checkpoint(run_folder, monkeypatch, tmp_path) -> None:
    out, x = run_folder
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, data in folder_bytes(out).items():
        (copy / name).write_bytes(data)
    before = folder_bytes(copy)

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.os, "fsync", no_space)
    with pytest.raises(OSError, match="could not write .*No space left.*free some disk space"):
        VarClust(epochs=2, **TINY).fit(x, out_dir=copy, resume=True, progress=False)
    monkeypatch.undo()
    assert folder_bytes(copy) == before  # no temporary files, nothing half-written
    state = ckpt.load_checkpoint(copy / "checkpoint.pt")
    assert state["epoch"] == 1 and torch.isfinite(state["model"]["prior.loc_unconstrained"]).all()


# ------------------------------------------------------------------------ config files
@pytest.mark.parametrize("text, pattern", [
    ('{"num_clusters": 3, "epoch": 5}', r"unknown config keys \['epoch'\]"),
    ('{"num_clusters": 3,', "is not valid JSON"),
    ('[3, 4]', "must hold a JSON object of settings, got a list"),
    ('{"epochs": "ten"}', "epochs must be an integer, got 'ten'"),
    ('{"hidden": [64, -1]}', "hidden must list positive layer widths"),
    ('{"learning_rate": 1e999}', "learning rates must be finite"),
    (None, "cannot read the config file"),
])
def test_bad_config_file_is_one_clear_cli_error(tmp_path, capsys, text, pattern) -> None:
    config = tmp_path / "config.json"
    if text is not None:
        config.write_text(text)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("{}")  # an earlier output in the run folder
    code = main(["fit", "--dataset", "digits", "--out", str(run), "--config", str(config),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "config.json" in err
    assert re.search(pattern, err), err
    assert folder_bytes(run) == {"metrics.json": b"{}"}


def _config(argv: list[str]) -> FitConfig:
    from varclust.cli import build_parser, config_from_args

    argv = [*argv, "--out", "unused"]
    args = build_parser().parse_args(argv)
    args.argv = argv
    return config_from_args(args)


def test_config_file_sets_what_flags_leave_alone(tmp_path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"num_clusters": 4, "seed": 7, "clip_norm": 2.5, "epochs": 9}))
    merged = _config(["fit", "--config", str(path), "--seed", "3", "--epochs=60"])
    assert (merged.num_clusters, merged.clip_norm) == (4, 2.5)  # from the file
    assert (merged.seed, merged.epochs) == (3, 60)  # typed flags win
    assert merged.hidden == FitConfig().hidden  # neither: the default


def test_a_config_files_settings_count_as_chosen_before_presets_and_recipes(tmp_path) -> None:
    """The file's keys are settings the user chose: the recipe's schedule follows its epochs,
    its generator brings that generator's presets, its prior the recipe's exceptions; and
    --data gets no data set's presets."""
    def file(**keys):
        path = tmp_path / f"{'_'.join(keys)}.json"
        path.write_text(json.dumps(keys))
        return str(path)

    scratch = _config(["fit", "--recipe", "scratch", "--config", file(epochs=30)])
    assert (scratch.epochs, scratch.kl_warmup_epochs, scratch.lr_decay_from) == (30, 10, 25)
    typed = _config(["fit", "--recipe", "scratch", "--epochs", "30"])
    assert (typed.kl_warmup_epochs, typed.lr_decay_from) == (10, 25)
    ddpm = _config(["fit", "--config", file(generator="ddpm", method="em")])
    assert ddpm.learning_rate == _config(["fit", "--generator", "ddpm",
                                          "--method", "em"]).learning_rate
    dp = _config(["fit", "--recipe", "scratch", "--config", file(prior="dp")])
    assert dp.prior == "dp" and dp.revive_clusters == 0
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((4, 3), np.float32))
    assert _config(["fit", "--data", str(npy)]).epochs == FitConfig().epochs  # not digits' 60


def test_cli_fit_reads_the_config_file(tmp_path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"clip_norm": 3.5, "hidden": [8], "latent_dim": 2,
                                  "max_bad_steps": 4, "seed": 11}))
    run = tmp_path / "run"
    assert main(["fit", "--dataset", "digits", "--out", str(run), "--config", str(config),
                 "--epochs", "0", "--pretrain-epochs", "0", "--seed", "5",
                 "--checkpoint-every", "7", "--quiet"]) == 0
    saved = json.loads((run / "metrics.json").read_text())["config"]
    assert (saved["clip_norm"], saved["hidden"], saved["max_bad_steps"]) == (3.5, [8], 4)
    assert (saved["seed"], saved["checkpoint_every_steps"], saved["epochs"]) == (5, 7, 0)


def test_a_bool_setting_a_config_file_turns_on_can_be_typed_off(tmp_path, cli_config) -> None:
    """Bool settings have a ``--no-`` flag, and a typed one wins over a config file (and a
    recipe) as any typed flag does."""
    config = cli_config

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"fit_mixture_at_start": True, "dp_learn_concentration": True}))

    on = config("--config", str(path))
    assert on.fit_mixture_at_start and on.dp_learn_concentration
    off = config("--config", str(path), "--no-fit-mixture-at-start")
    assert not off.fit_mixture_at_start and off.dp_learn_concentration
    assert config("--fit-mixture-at-start").fit_mixture_at_start
    assert not config().fit_mixture_at_start
