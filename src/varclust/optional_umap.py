"""umap-learn, an optional dependency, imported the way varclust needs it."""

from __future__ import annotations

from types import ModuleType

__all__ = ["import_umap"]


def import_umap(needed_by: str, instead: str) -> ModuleType:
    """The ``umap`` module, or ImportError naming the setting that needs it (``needed_by``)
    and what to use ``instead``.

    numba's default (OpenMP) thread pool, started after PyTorch's own OpenMP, left a worker
    thread spinning for the rest of the process (3 runs of 3; the SVI epochs after a UMAP start
    then ran at half speed on 2 cores). The workqueue pool does not (4 of 4), and seeded UMAP runs
    one thread anyway, so it is chosen here unless the user chose a layer.
    """
    try:
        import numba

        if numba.config.THREADING_LAYER == "default":  # not chosen by the user
            numba.config.THREADING_LAYER = "workqueue"
        import umap
    except ImportError as err:
        raise ImportError(
            f"{needed_by} needs umap-learn, which is not installed: `pip install umap-learn` "
            f"(scripts/bootstrap.sh installs it), or {instead}") from err
    return umap
