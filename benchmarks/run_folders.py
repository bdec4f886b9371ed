"""The command line of a benchmark that reads finished run folders of ``varclust fit``."""

from __future__ import annotations

import argparse
from pathlib import Path


def run_folder_arguments(description: str) -> argparse.Namespace:
    """Parse ``RUN [RUN ...] [--dataset NAME] [--json FILE]``: the run folders, the data set
    they were fitted to (default fashion-mnist) and where to write the JSON."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("runs", type=Path, nargs="+", help="run folders of `varclust fit`")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--json", type=Path)
    return parser.parse_args()
