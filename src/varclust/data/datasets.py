"""Image data sets through ``torchvision.datasets``, the UCI digits from scikit-learn.

Every loader returns the whole data set (train and test splits joined, as the clustering
literature reports on it) as an :class:`ImageDataset` of floats in [0, 1].

Where the files are looked for, in order:
1. ``root`` (argument), else ``$VARCLUST_DATA``, else ``~/.cache/varclust``, in torchvision's
   own layout (``ROOT/FashionMNIST/raw/...``, ``ROOT/usps.bz2``, ``ROOT/cifar-10-batches-py``);
2. system copies: for Fashion-MNIST, Debian's ``dataset-fashion-mnist`` package
   (``/usr/share/datasets/fashion-mnist``), whose gzipped IDX files are unpacked into ``root``;
3. a download by torchvision, when ``download=True`` and the machine is online.
"""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor

from ..inference.checkpoint import write_atomic
from .idx import DatasetCorruptError, check_raw_folder, gunzip_to

__all__ = [
    "DATASETS",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "ImageDataset",
    "default_data_root",
    "load_dataset",
]

SYSTEM_DIRS: dict[str, list[Path]] = {
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
    "mnist": [Path("/usr/share/datasets/mnist")],
}

HOW_TO_GET = {
    "fashion-mnist": "on Debian/Ubuntu run `apt-get install dataset-fashion-mnist`, or go online "
    "and pass download=True (CLI: --download)",
    "mnist": "go online and pass download=True (CLI: --download), or copy the four IDX files "
    "into ROOT/MNIST/raw/",
    "usps": "go online and pass download=True (CLI: --download), or copy usps.bz2 and usps.t.bz2 "
    "into ROOT/",
    "cifar10": "go online and pass download=True (CLI: --download), or unpack "
    "cifar-10-python.tar.gz into ROOT/",
}


class DatasetNotFoundError(FileNotFoundError):
    """The data set is neither on disk nor downloadable; the message says how to get it."""


@dataclass
class ImageDataset:
    """A whole data set held in memory.

    Attributes:
        images: (N, C, H, W) float32 in [0, 1].
        labels: (N,) int64 class labels, or None when the data are unlabelled.
        name: the data set's name.
    """

    images: Tensor
    labels: Tensor | None
    name: str

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])


def default_data_root() -> Path:
    return Path(os.environ.get("VARCLUST_DATA", Path.home() / ".cache" / "varclust"))


def _stage_idx_files(system_dir: Path, raw_folder: Path, resources: list) -> bool:
    """Unpack a system copy of the four IDX files into torchvision's raw folder."""
    names = [os.path.basename(url) for url, _ in resources]
    if not all((system_dir / n).exists() or (system_dir / n[:-3]).exists() for n in names):
        return False
    raw_folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        target = raw_folder / n[:-3]
        if target.exists():
            continue
        if (system_dir / n).exists():
            gunzip_to(system_dir / n, target)
        else:
            write_atomic(target, (system_dir / n[:-3]).read_bytes())
    return True


def _with_download(
    name: str, make: Callable[[bool, bool], object], download: bool, files: Sequence[Path] = ()
) -> list:
    """Build train and test splits; download only when asked and when missing.

    ``files``: the data files torchvision reads; when they are all there but cannot be read,
    a :class:`DatasetCorruptError` names them (rather than calling them missing).
    """
    try:
        return [make(False, train) for train in (True, False)]
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as missing:
        if files and all(f.exists() for f in files):
            raise DatasetCorruptError(
                f"dataset {name!r}: {', '.join(str(f) for f in files)} are on disk but could "
                f"not be read ({type(missing).__name__}: {missing}); they are truncated or "
                f"not the real files: delete them, then {HOW_TO_GET[name]}"
            ) from None
        if not download:
            raise DatasetNotFoundError(
                f"dataset {name!r} is not on disk ({missing}); {HOW_TO_GET[name]}"
            ) from None
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        return [make(True, train) for train in (True, False)]
    except Exception as err:  # torchvision raises several kinds when offline
        raise DatasetNotFoundError(
            f"dataset {name!r} is not on disk and could not be downloaded ({err}); "
            f"{HOW_TO_GET[name]}"
        ) from None
    finally:
        socket.setdefaulttimeout(old_timeout)


def _mnist_like(cls: type, name: str) -> Callable[[Path, bool], ImageDataset]:
    def load(root: Path, download: bool) -> ImageDataset:
        raw = root / cls.__name__ / "raw"
        for system_dir in SYSTEM_DIRS.get(name, []):
            if _stage_idx_files(system_dir, raw, cls.resources):
                break
        check_raw_folder(raw, [os.path.basename(url) for url, _ in cls.resources])
        splits = _with_download(
            name, lambda dl, train: cls(str(root), train=train, download=dl), download
        )
        images = torch.cat([s.data for s in splits]).unsqueeze(1).float().div_(255.0)
        labels = torch.cat([torch.as_tensor(s.targets) for s in splits]).long()
        return ImageDataset(images, labels, name)

    return load


def _load_usps(root: Path, download: bool) -> ImageDataset:
    splits = _with_download(
        "usps",
        lambda dl, train: torchvision.datasets.USPS(str(root), train=train, download=dl),
        download,
        [root / "usps.bz2", root / "usps.t.bz2"],
    )
    images = np.concatenate([s.data for s in splits])  # (N, 16, 16) uint8
    labels = np.concatenate([np.asarray(s.targets) for s in splits])
    return ImageDataset(
        torch.from_numpy(images).unsqueeze(1).float().div_(255.0),
        torch.from_numpy(labels).long(),
        "usps",
    )


_CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


def _load_cifar10(root: Path, download: bool) -> ImageDataset:
    splits = _with_download(
        "cifar10",
        lambda dl, train: torchvision.datasets.CIFAR10(str(root), train=train, download=dl),
        download,
        [root / "cifar-10-batches-py" / n for n in _CIFAR10_FILES],
    )
    images = np.concatenate([s.data for s in splits])  # (N, 32, 32, 3) uint8
    labels = np.concatenate([np.asarray(s.targets) for s in splits])
    return ImageDataset(
        torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).contiguous(),
        torch.from_numpy(labels).long(),
        "cifar10",
    )


def _load_digits(root: Path, download: bool) -> ImageDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)  # (1797, 1, 8, 8)
    return ImageDataset(images, torch.from_numpy(bunch.target).long(), "digits")


DATASETS: dict[str, Callable[[Path, bool], ImageDataset]] = {
    "digits": _load_digits,
    "fashion-mnist": _mnist_like(torchvision.datasets.FashionMNIST, "fashion-mnist"),
    "mnist": _mnist_like(torchvision.datasets.MNIST, "mnist"),
    "usps": _load_usps,
    "cifar10": _load_cifar10,
}


def load_dataset(
    name: str, root: str | os.PathLike | None = None, download: bool = False
) -> ImageDataset:
    """Load a whole data set (train + test) as floats in [0, 1].

    Args:
        name: one of ``digits`` (UCI 8x8, 1797 images, shipped with scikit-learn),
            ``fashion-mnist``, ``mnist`` (70000 x 1 x 28 x 28), ``usps`` (9298 x 1 x 16 x 16),
            ``cifar10`` (60000 x 3 x 32 x 32).
        root: torchvision's data folder; default ``$VARCLUST_DATA`` or ``~/.cache/varclust``.
        download: let torchvision download what is missing (needs a network); off by
            default, as in torchvision: nothing is fetched unless asked.

    Raises:
        ValueError: an unknown name.
        DatasetNotFoundError: not on disk and not downloadable; the message says how to get it.
    """
    key = name.lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    root = Path(root) if root is not None else default_data_root()
    return DATASETS[key](root, download)
