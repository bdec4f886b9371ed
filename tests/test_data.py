"""Data set loaders on tiny fixtures in torchvision's on-disk formats (no network)."""

import bz2
import gzip
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import varclust.data.datasets as ds
from varclust.data.datasets import (
    DatasetCorruptError,
    DatasetNotFoundError,
    ImageDataset,
    load_dataset,
)

IDX_NAMES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
FASHION_SYSTEM_FILE = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def idx_bytes(array: np.ndarray) -> bytes:
    """The big-endian IDX format: magic 0x0000080N (uint8, N dims), the dims, the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def make_idx_split(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = 0
    images[:, 27, 27] = 255  # the range reaches both ends
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    return images, labels


def write_idx_set(folder: Path, splits: dict, compress: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in splits.items():
        for kind, array in (("images", images), ("labels", labels)):
            name = IDX_NAMES[(split, kind)]
            data = idx_bytes(array)
            if compress:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)


def check_idx_dataset(data: ImageDataset, splits: dict, name: str) -> None:
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    n = len(train_x) + len(test_x)
    assert isinstance(data, ImageDataset)
    assert data.name == name
    assert len(data) == n
    assert data.images.shape == (n, 1, 28, 28)
    assert data.image_shape == (1, 28, 28)
    assert data.images.dtype == torch.float32
    assert float(data.images.min()) == 0.0 and float(data.images.max()) == 1.0
    expected = np.concatenate([train_x, test_x]).astype(np.float32) / 255.0
    np.testing.assert_allclose(data.images[:, 0].numpy(), expected, rtol=0, atol=1e-7)
    assert data.labels.dtype == torch.int64
    np.testing.assert_array_equal(data.labels.numpy(), np.concatenate([train_y, test_y]))


@pytest.fixture
def no_system_dirs(monkeypatch, tmp_path):
    """Point every system copy at an empty folder, so only ``root`` counts."""
    empty = tmp_path / "empty-system-dir"
    empty.mkdir()
    for key in list(ds.SYSTEM_DIRS):
        monkeypatch.setitem(ds.SYSTEM_DIRS, key, [empty])
    return empty


# ---------------------------------------------------------------------------- MNIST (IDX)
def test_mnist_from_raw_idx_files(tmp_path, no_system_dirs):
    rng = np.random.default_rng(0)
    splits = {"train": make_idx_split(rng, 7), "test": make_idx_split(rng, 3)}
    root = tmp_path / "root"
    write_idx_set(root / "MNIST" / "raw", splits)
    data = load_dataset("mnist", root=root, download=False)
    check_idx_dataset(data, splits, "mnist")


def test_mnist_system_dir_with_uncompressed_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    splits = {"train": make_idx_split(rng, 4), "test": make_idx_split(rng, 2)}
    system = tmp_path / "system"
    write_idx_set(system, splits, compress=False)
    monkeypatch.setitem(ds.SYSTEM_DIRS, "mnist", [tmp_path / "absent", system])
    root = tmp_path / "root"
    data = load_dataset("MNIST", root=root, download=False)
    check_idx_dataset(data, splits, "mnist")
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == sorted(IDX_NAMES.values())


# ---------------------------------------------------------------------------- Fashion-MNIST
def test_fashion_mnist_staged_from_gzipped_system_dir(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    splits = {"train": make_idx_split(rng, 6), "test": make_idx_split(rng, 4)}
    system = tmp_path / "system"
    write_idx_set(system, splits, compress=True)
    monkeypatch.setitem(ds.SYSTEM_DIRS, "fashion-mnist", [system])
    root = tmp_path / "root"
    data = load_dataset("fashion-mnist", root=root, download=False)
    check_idx_dataset(data, splits, "fashion-mnist")
    raw = root / "FashionMNIST" / "raw"
    # unpacked under torchvision's names, no partial files left behind, the system copy untouched
    assert sorted(p.name for p in raw.iterdir()) == sorted(IDX_NAMES.values())
    assert (raw / "train-images-idx3-ubyte").read_bytes() == idx_bytes(splits["train"][0])
    assert sorted(p.name for p in system.iterdir()) == sorted(f"{n}.gz" for n in IDX_NAMES.values())
    # a second load reuses the staged files (the system copy may be gone)
    monkeypatch.setitem(ds.SYSTEM_DIRS, "fashion-mnist", [tmp_path / "gone"])
    again = load_dataset("fashionmnist", root=root, download=False)
    assert torch.equal(again.images, data.images)


def test_incomplete_system_dir_is_not_staged(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    system = tmp_path / "system"
    write_idx_set(system, {"train": make_idx_split(rng, 2), "test": make_idx_split(rng, 2)}, True)
    (system / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setitem(ds.SYSTEM_DIRS, "fashion-mnist", [system])
    with pytest.raises(DatasetNotFoundError, match="fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path / "root", download=False)
    assert not (tmp_path / "root" / "FashionMNIST" / "raw").exists()


@pytest.mark.skipif(not FASHION_SYSTEM_FILE.exists(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package(tmp_path):
    data = load_dataset("fashion-mnist", root=tmp_path, download=False)  # about 1.5 s
    assert data.images.shape == (70000, 1, 28, 28)
    assert data.images.dtype == torch.float32
    assert 0.0 <= float(data.images.min()) and float(data.images.max()) <= 1.0
    assert torch.equal(torch.bincount(data.labels), torch.full((10,), 7000))
    shutil.rmtree(tmp_path / "FashionMNIST")  # 55 MB unpacked: do not keep it in pytest's tmp


# ---------------------------------------------------------------------------- USPS (libsvm, bz2)
def write_usps(path: Path, pixels: np.ndarray, labels: np.ndarray) -> None:
    """torchvision's USPS format: ``label idx:value ...`` with labels 1..10, values in [-1, 1]."""
    lines = []
    for row, label in zip(pixels, labels):
        feats = " ".join(f"{i + 1}:{v:.6f}" for i, v in enumerate(row))
        lines.append(f"{label} {feats}\n")
    path.write_bytes(bz2.compress("".join(lines).encode()))


def test_usps_from_bz2_libsvm_files(tmp_path):
    rng = np.random.default_rng(4)
    n_train, n_test = 5, 3
    pixels = rng.uniform(-1, 1, size=(n_train + n_test, 256))
    pixels[0, 0], pixels[0, 1] = -1.0, 1.0
    labels = np.array([1, 2, 3, 10, 5, 6, 10, 1])  # libsvm labels 1..10
    write_usps(tmp_path / "usps.bz2", pixels[:n_train], labels[:n_train])
    write_usps(tmp_path / "usps.t.bz2", pixels[n_train:], labels[n_train:])
    data = load_dataset("usps", root=tmp_path, download=False)
    assert data.name == "usps"
    assert data.images.shape == (8, 1, 16, 16)
    assert data.images.dtype == torch.float32
    assert float(data.images.min()) == 0.0 and float(data.images.max()) == 1.0
    np.testing.assert_array_equal(data.labels.numpy(), labels - 1)
    assert data.labels.min() >= 0 and data.labels.max() <= 9
    # pixel values: [-1, 1] -> [0, 1] (through torchvision's 8-bit rounding), row-major 16x16
    expected = ((pixels + 1) / 2).reshape(-1, 16, 16)
    np.testing.assert_allclose(data.images[:, 0].numpy(), expected, atol=1.5 / 255)


# ---------------------------------------------------------------------------- CIFAR-10 (pickles)
def test_cifar10_from_pickled_batches(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(5)
    per_batch = 2
    rows, labels = [], []
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        # CIFAR's row layout: 1024 red, then 1024 green, then 1024 blue values
        data = np.empty((per_batch, 3072), dtype=np.uint8)
        data[:, :1024] = 10 * b + 1  # red
        data[:, 1024:2048] = 10 * b + 2  # green
        data[:, 2048:] = rng.integers(100, 256, size=(per_batch, 1024))  # blue
        lab = [(2 * b + j) % 10 for j in range(per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": lab, "batch_label": name}, f)
        rows.append(data)
        labels.extend(lab)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    # torchvision checks the real files' md5 sums
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "meta", meta)

    data = load_dataset("CIFAR-10", root=tmp_path, download=False)
    assert data.name == "cifar10"
    assert data.images.shape == (12, 3, 32, 32)
    assert data.images.dtype == torch.float32 and data.images.is_contiguous()
    assert 0.0 <= float(data.images.min()) and float(data.images.max()) <= 1.0
    np.testing.assert_array_equal(data.labels.numpy(), labels)
    # channel order is R, G, B and the pixels are in CIFAR's row-major order
    for b in range(6):
        batch = data.images[2 * b : 2 * b + 2]
        assert torch.all(batch[:, 0] == (10 * b + 1) / 255)
        assert torch.all(batch[:, 1] == (10 * b + 2) / 255)
    blue = np.concatenate(rows)[:, 2048:].reshape(-1, 32, 32).astype(np.float32) / 255
    np.testing.assert_allclose(data.images[:, 2].numpy(), blue, atol=1e-7)


# ---------------------------------------------------------------------------- digits
def test_digits():
    data = load_dataset("digits", root="/nonexistent", download=False)
    assert data.name == "digits"
    assert data.images.shape == (1797, 1, 8, 8)
    assert data.images.dtype == torch.float32
    assert float(data.images.min()) == 0.0 and float(data.images.max()) == 1.0
    assert sorted(torch.unique(data.labels).tolist()) == list(range(10))
    assert data.labels.dtype == torch.int64


# ---------------------------------------------------------------------------- missing / unknown
def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, no_system_dirs):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", root=tmp_path / "root", download=False)
    message = str(info.value)
    assert "'fashion-mnist'" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "download=True" in message
    assert isinstance(info.value, FileNotFoundError)  # callers may catch the builtin


@pytest.mark.parametrize(
    "name, hint",
    [
        ("mnist", "ROOT/MNIST/raw"),
        ("usps", "usps.bz2 and usps.t.bz2"),
        ("cifar10", "cifar-10-python.tar.gz"),
    ],
)
def test_missing_dataset_names_itself_and_the_fix(tmp_path, no_system_dirs, name, hint):
    with pytest.raises(DatasetNotFoundError, match=f"dataset '{name}' is not on disk") as info:
        load_dataset(name, root=tmp_path / "root", download=False)
    assert hint in str(info.value)
    assert "download=True" in str(info.value)


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'") as info:
        load_dataset("imagenet", download=False)
    for choice in ("digits", "fashion-mnist", "mnist", "usps", "cifar10"):
        assert choice in str(info.value)


@pytest.mark.parametrize("name", ["usps", "cifar10"])
def test_damaged_files_on_disk_are_named_not_called_missing(tmp_path, name):
    if name == "usps":
        files = [tmp_path / "usps.bz2", tmp_path / "usps.t.bz2"]
    else:
        folder = tmp_path / "cifar-10-batches-py"
        folder.mkdir()
        files = [folder / f"data_batch_{i}" for i in range(1, 6)]
        files += [folder / "test_batch", folder / "batches.meta"]
    for f in files:
        f.write_bytes(b"not the real file")
    with pytest.raises(DatasetCorruptError, match="on disk but could not be read") as info:
        load_dataset(name, root=tmp_path, download=True)  # damaged files are not re-downloaded
    assert str(files[0]) in str(info.value)
    assert "delete them" in str(info.value)
