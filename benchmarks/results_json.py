"""Writing a benchmark's JSON with the machine facts every result file carries."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch


def write_results(out: Path, **fields) -> None:
    """Write ``fields`` to ``out`` (folders made) with the machine, torch's thread count, the
    load average and the UTC date beside them, and say where."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        **fields, "machine": platform.platform(), "cpu_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }, indent=2))
    print(f"wrote {out}")
