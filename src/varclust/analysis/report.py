"""``varclust report RUN``: every figure of a fitted run as PNG, an HTML page that shows them,
and the run's ``InferenceData`` as NetCDF."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import arviz as az
import torch

from ..estimator import VarClust
from ..inference.checkpoint import write_atomic
from ..metrics import clustering_scores
from .inference_data import to_inference_data
from .plots import (
    plot_cluster_samples,
    plot_compare,
    plot_confusion_matrix,
    plot_entropy_histogram,
    plot_latent_map,
    plot_training_curve,
)
from .report_tables import cluster_members, cluster_rows, comparison_rows, html_table
from .run_data import load_run

__all__ = ["Figure", "write_report"]

REPORT_DIR = "report"
PAGE_NAME = "index.html"
IDATA_NAME = "inference_data.nc"


@dataclass
class Figure:
    """One PNG of the report and the sentence shown under it."""

    file: str
    caption: str


def _run_data(run: Path, data_root: Path | None, arrays=None):
    """The fitted model of a run folder, the name of its data and the data."""
    vc, data = load_run(run, data_root, arrays=arrays)
    return vc, data.name, data


def write_report(
    run: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    compare: Sequence[str | os.PathLike] = (),
    num_data: int = 1000,
    num_samples: int = 50,
    importance_samples: int = 16,
    method: str = "pca",
    data_root: str | os.PathLike | None = None,
    seed: int = 0,
    arrays: Sequence[str | os.PathLike | None] | None = None,
) -> Path:
    """Write the report of a run folder (``varclust fit --out RUN``) and return its page.

    The scores (ACC/NMI/ARI, the mean assignment entropy), the table of cluster sizes and
    weights and the real members of each cluster use the whole data set; the latent map, the
    confusion matrix, the entropy histogram and the InferenceData use ``num_data`` data points
    drawn at random (seeded), and the page says so. Also drawn: samples per cluster beside
    real members, the training curve, and, when ``compare`` names other run folders fitted to
    the same data set, ``az.plot_compare`` of their importance-weighted LOO (see
    :mod:`varclust.analysis.inference_data` for the caveat) with a table of ELPD, ACC/NMI and
    clusters in use per run.

    Args:
        run: the run folder. out: where to write (default ``RUN/report``).
        compare: more run folders to rank against this one.
        num_samples, importance_samples: draws for the InferenceData (written as NetCDF).
        method: "pca" or "tsne" for the latent map.
        arrays: (X.npy, y.npy or None), the data of runs that record none (see
            :func:`varclust.analysis.run_data.load_run`).
    """
    run = Path(run)
    out_dir = Path(out) if out is not None else run / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    root = Path(data_root) if data_root is not None else None
    vc, dataset, data = _run_data(run, root, arrays)
    if num_data < 2:
        raise ValueError(f"num_data must be at least 2, got {num_data}")
    generator = torch.Generator().manual_seed(seed)
    subset = torch.randperm(len(data), generator=generator)[: min(num_data, len(data))]
    subset = subset.sort().values
    x = data.images[subset]
    y = data.labels[subset].numpy() if data.labels is not None else None
    y_all = data.labels.numpy() if data.labels is not None else None
    pred_all = vc.predict(data.images)
    pred = vc.predict(x)
    k = vc.config.num_clusters
    figures: list[Figure] = []

    torch.manual_seed(seed)
    plot_cluster_samples([vc.sample(c, 8) for c in range(k)], out_dir / "samples.png",
                         members=cluster_members(data.images, pred_all.labels,
                                                 pred_all.responsibilities))
    figures.append(Figure("samples.png", "Row k: images drawn from cluster k, then real "
                          "members of cluster k (the data it claims most surely)."))
    if vc.history:
        plot_training_curve(vc.history, out_dir / "training.png", vc.pretrain_losses)
        figures.append(Figure("training.png", "ELBO per datum over the SVI epochs."))
    plot_latent_map(vc.encode(x), pred.labels, out_dir / "latent_map.png", labels=y,
                    method=method, seed=seed)
    figures.append(Figure("latent_map.png", f"Posterior means of z, projected by "
                          f"{method.upper()}, coloured by cluster"
                          + (" and by true label." if y is not None else ".")))
    scores: dict[str, float] = {"mean assignment entropy": float(pred_all.entropy.mean())}
    if y is not None:
        plot_confusion_matrix(y, pred.labels, out_dir / "confusion.png")
        figures.append(Figure("confusion.png", "Classes against clusters, clusters ordered by "
                              "the class the Hungarian matching gives them."))
        scores.update(clustering_scores(y_all, pred_all.labels))
    tables = [("Clusters (all data)", html_table(
        ["cluster", "data", "share", "prior weight"],
        cluster_rows(pred_all.labels, vc.mixture_["weights"])))]
    plot_entropy_histogram(pred.entropy, k, out_dir / "entropy.png")
    figures.append(Figure("entropy.png", "Entropy of each datum's cluster posterior."))

    idata = to_inference_data(vc, x, num_samples, importance_samples=importance_samples,
                              labels=y, seed=seed)
    idata.to_netcdf(str(out_dir / IDATA_NAME))
    if compare:
        fits = {run.name: idata}
        assigned = {run.name: (pred_all.labels, k)}
        for other in map(Path, compare):
            other_vc, other_dataset, _ = _run_data(other, root, arrays)
            if other_dataset != dataset:
                raise ValueError(
                    f"{other} was fitted to {other_dataset!r}, {run} to {dataset!r}: "
                    "only fits to the same data set can be compared"
                )
            name = other.name if other.name not in fits else str(other)
            fits[name] = to_inference_data(other_vc, x, num_samples,
                                           importance_samples=importance_samples, seed=seed)
            assigned[name] = (other_vc.predict(data.images).labels,
                              other_vc.config.num_clusters)
        comparison = az.compare(fits)
        plot_compare(comparison, out_dir / "compare.png",
                     title="importance-weighted PSIS-LOO (higher is better)")
        tables.append((f"Comparison (ELPD on the {len(x)} drawn data; ACC, NMI and clusters "
                       "in use on all data)", html_table(
                           ["run", "rank", "ELPD (LOO)", "SE", "ACC", "NMI", "clusters in use"],
                           comparison_rows(comparison, assigned, y_all))))
        figures.append(Figure("compare.png", "az.plot_compare of the runs: ELPD from "
                              "importance-weighted estimates of log p(x_i) (estimates, see "
                              "the caveat in varclust.analysis.inference_data)."))

    page = out_dir / PAGE_NAME
    page_text = _html(run, dataset, (len(x), len(data)), vc, scores, figures, tables)
    write_atomic(page, page_text.encode())
    return page


def _html(run: Path, dataset: str, num_data: tuple[int, int], vc: VarClust,
          scores: dict[str, float], figures: list[Figure], tables: list[tuple[str, str]]
          ) -> str:
    """The page; ``num_data``: (data drawn for the figures, all data)."""
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(key)}</th><td>{value:.4f}</td></tr>"
                   for key, value in scores.items())
    config = esc(json.dumps(vc.config.to_dict(), indent=1))
    blocks = "".join(
        f'<figure><img src="{esc(f.file)}" alt="{esc(f.caption)}">'
        f"<figcaption>{esc(f.caption)}</figcaption></figure>"
        for f in figures
    )
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>varclust report: {esc(run.name)}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        "img{max-width:100%}figure{margin:1.5em 0}th{text-align:left;padding-right:1em}"
        ".grid td{text-align:right;padding:0 0.6em}"
        "</style></head><body>"
        f"<h1>varclust report: {esc(str(run))}</h1>"
        f"<p>Data set <b>{esc(dataset)}</b>: the scores, the cluster table and the members "
        f"use all {num_data[1]} data; the latent map, the confusion matrix, the entropy "
        f"histogram and the InferenceData use {num_data[0]} data drawn at random; "
        f"K = {vc.config.num_clusters}. The InferenceData is in <code>{IDATA_NAME}</code>.</p>"
        f"<h2>Scores (all {num_data[1]} data)</h2><table>{rows}</table>"
        + "".join(f"<h2>{esc(title)}</h2>{table}" for title, table in tables)
        + f"{blocks}"
        f"<details><summary>configuration</summary><pre>{config}</pre></details>"
        "</body></html>"
    )
