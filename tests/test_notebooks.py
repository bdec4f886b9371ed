"""Every notebook in notebooks/ executes without error at its small settings, and is committed
with its outputs, which display what the executed cells display."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from varclust.data.datasets import SYSTEM_DIRS, default_data_root

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def _fashion_mnist_on_disk() -> bool:
    system = any((d / "train-images-idx3-ubyte.gz").exists() or
                 (d / "train-images-idx3-ubyte").exists() for d in SYSTEM_DIRS["fashion-mnist"])
    return system or (default_data_root() / "FashionMNIST" / "raw").is_dir()


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 5
    assert "05_choosing_k" in {p.stem for p in NOTEBOOKS}  # runs Fashion-MNIST only if on disk


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_with_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count is not None for cell in code)
    assert not any(out.get("output_type") == "error" for cell in code for out in cell.outputs)
    assert any(out.get("output_type") == "display_data" for cell in code for out in cell.outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_at_small_settings(path, tmp_path, monkeypatch):
    if "fashion" in path.stem and not _fashion_mnist_on_disk():
        pytest.skip("Fashion-MNIST is not on disk (scripts/bootstrap.sh installs it as root)")
    monkeypatch.setenv("VARCLUST_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    notebook = nbformat.read(path, as_version=4)
    # what each code cell of the committed notebook displays, before execution replaces it
    committed = [_shown(cell) for cell in notebook.cells if cell.cell_type == "code"]
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "small settings" in "".join(out.get("text", "") for out in code[0].outputs)
    # each cell shows what its committed output shows (a figure, a table, a value), so the
    # committed outputs describe what the code now does
    fashion = _fashion_mnist_on_disk()  # without it, a cell that loads it shows no figure
    for index, (ran, kept) in enumerate(zip(code, committed)):
        if fashion or '"fashion-mnist"' not in ran.source:
            assert _shown(ran) == kept, f"cell {index} of {path.name}: {ran.source[:80]!r}"


def _shown(cell) -> list[tuple[str, tuple[str, ...]]]:
    """What a code cell displays, not what it prints: (output type, MIME types) of each
    display or result output, in order (stream text and its warnings may differ between the
    small and the full settings)."""
    return [(out["output_type"], tuple(sorted(out.get("data", {}))))
            for out in cell.outputs if out["output_type"] in ("display_data", "execute_result")]
