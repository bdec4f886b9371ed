"""How a fit shows its progress: tqdm bars on a terminal, one plain line per epoch elsewhere
(a log file, a pipe, a notebook's captured output), or nothing."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from tqdm.auto import tqdm

__all__ = ["Progress"]

MODES = ("bars", "lines", "off")


class Progress:
    """``mode``: True picks "bars" on a terminal (stderr) or in a Jupyter kernel (tqdm's
    widgets) and "lines" otherwise; False is "off"; or one of "bars", "lines" (no bars, but
    every epoch's numbers on stdout), "off"."""

    def __init__(self, mode: bool | str = True) -> None:
        if mode is True:
            mode = "bars" if sys.stderr.isatty() or "ipykernel" in sys.modules else "lines"
        elif mode is False:
            mode = "off"
        if mode not in MODES:
            raise ValueError(f"progress must be True, False or one of {MODES}, got {mode!r}")
        self.mode = mode

    @property
    def bars(self) -> bool:
        return self.mode == "bars"

    def bar(self, **kwargs: Any) -> tqdm:
        """A tqdm bar (``total``, ``desc``, ``unit`` ...), disabled unless the mode is "bars"."""
        return tqdm(disable=not self.bars, **kwargs)

    def line(self, desc: str, index: int, total: int, record: Mapping[str, Any]) -> None:
        """In "lines" mode print ``desc index/total: key value, ...`` (numbers of ``record``
        other than ``epoch``/``iteration``) and flush, so a log shows each epoch as it ends."""
        if self.mode != "lines":
            return
        numbers = ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                            if k not in ("epoch", "iteration") and isinstance(v, (int, float)))
        print(f"varclust: {desc} {index}/{total}: {numbers}", flush=True)
