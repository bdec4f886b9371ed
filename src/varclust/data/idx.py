"""Checks of IDX files (the MNIST format) before torchvision reads them, and safe unpacking of
gzipped copies: a truncated or corrupt file gives one error that names it and the fix.

The IDX format: two zero bytes, a type code (0x08 for uint8), the number of dimensions, then
each dimension as a big-endian uint32, then the values.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

from ..inference.checkpoint import write_atomic

__all__ = ["DatasetCorruptError", "check_idx_file", "check_idx_pair", "gunzip_to"]

#: IDX type code -> bytes per value
IDX_TYPES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}
FIX = "delete it and copy it again (or download it again with download=True / --download)"


class DatasetCorruptError(ValueError):
    """A data file on disk is truncated or not in the format its name promises."""


def check_idx_file(path: str | os.PathLike, ndim: int | None = None) -> tuple[int, ...]:
    """Read an IDX header and check the file's size against it.

    Args:
        path: an uncompressed IDX file.
        ndim: the number of dimensions it must have (3 for images, 1 for labels), or None.
    Returns:
        the dimensions, e.g. (60000, 28, 28).
    Raises:
        DatasetCorruptError: a bad magic number, a truncated file, or trailing bytes.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        magic = f.read(4)
        if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in IDX_TYPES:
            raise DatasetCorruptError(
                f"{path} is not an IDX file (it starts with {magic.hex() or 'nothing'}, not "
                f"0000 08 0N); {FIX}"
            )
        rank = magic[3]
        if ndim is not None and rank != ndim:
            raise DatasetCorruptError(
                f"{path} holds a {rank}-dimensional IDX array where {ndim} dimensions are "
                f"expected; {FIX}"
            )
        head = f.read(4 * rank)
    if len(head) < 4 * rank:
        raise DatasetCorruptError(f"{path} is truncated inside its header; {FIX}")
    dims = struct.unpack(f">{rank}I", head)
    count = 1
    for d in dims:
        count *= d
    expected = 4 + 4 * rank + count * IDX_TYPES[magic[2]]
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says"
        raise DatasetCorruptError(
            f"{path} is {what}: {size} bytes where its header {dims} needs {expected}; {FIX}"
        )
    return dims


def check_idx_pair(images: str | os.PathLike, labels: str | os.PathLike) -> None:
    """Images (N, H, W) and labels (N,) of one split must both be whole and agree on N."""
    n_images = check_idx_file(images, ndim=3)[0]
    n_labels = check_idx_file(labels, ndim=1)[0]
    if n_images != n_labels:
        raise DatasetCorruptError(
            f"{images} holds {n_images} images but {labels} holds {n_labels} labels; one of "
            f"them is from another data set or damaged: {FIX}"
        )


def gunzip_to(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Unpack ``source`` (.gz) into ``target`` with :func:`write_atomic` (a temporary file of
    this writer's own, then a rename: fits staging the same file at once each write their own);
    a truncated or corrupt archive raises :class:`DatasetCorruptError` and leaves no partial
    ``target``."""
    try:
        with gzip.open(source, "rb") as src:
            data = src.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DatasetCorruptError(
            f"{source} is a truncated or corrupt gzip file ({err}); replace it with a good copy "
            "(e.g. reinstall the package that ships it)"
        ) from None
    write_atomic(target, data)


def check_raw_folder(raw: str | os.PathLike, names: list[str]) -> None:
    """Check the IDX files of torchvision's raw folder that exist, split by split.

    Args:
        raw: e.g. ``ROOT/FashionMNIST/raw``.
        names: file names in torchvision's order: images, labels, images, labels (a ``.gz``
            ending is dropped).
    """
    raw = Path(raw)
    paths = [raw / (n[:-3] if n.endswith(".gz") else n) for n in names]
    for images, labels in zip(paths[0::2], paths[1::2]):
        if images.exists() and labels.exists():
            check_idx_pair(images, labels)
        elif images.exists() or labels.exists():
            check_idx_file(images if images.exists() else labels)
