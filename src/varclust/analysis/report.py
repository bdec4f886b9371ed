"""``varclust report RUN``: every figure of a fitted run as PNG, an HTML page that shows them,
and the run's ``InferenceData`` as NetCDF."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import torch
from numpy.typing import ArrayLike

from ..estimator import VarClust
from ..inference.checkpoint import write_atomic
from ..metrics import clustering_scores
from .global_posterior import global_posterior
from .heldout import heldout_pointwise, heldout_table
from .inference_data import to_inference_data
from .plots import (
    plot_cluster_samples,
    plot_compare,
    plot_confusion_matrix,
    plot_entropy_histogram,
    plot_heldout,
    plot_latent_map,
    plot_training_curve,
)
from .report_tables import (
    cluster_members,
    cluster_rows,
    comparison_rows,
    heldout_rows,
    html_table,
)
from .run_data import load_run

__all__ = ["Figure", "has_global_posterior", "write_report"]

REPORT_DIR = "report"
PAGE_NAME = "index.html"
IDATA_NAME = "inference_data.nc"


@dataclass
class Figure:
    """One PNG of the report and the sentence shown under it."""

    file: str
    caption: str


def has_global_posterior(vc: VarClust) -> bool:
    """Whether a fit has a posterior over its global parameters (so that
    :func:`~varclust.analysis.to_inference_data` gives posterior draws and PSIS-LOO is valid),
    as :func:`~varclust.analysis.global_posterior.global_posterior` finds it; a point-estimate
    fit has none."""
    return global_posterior(vc.model.prior) is not None


def _run_data(run: Path, data_root: Path | None, arrays=None, components=None):
    """The fitted model of a run folder, the name of its data and the data."""
    vc, data = load_run(run, data_root, arrays=arrays, **(components or {}))
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
    heldout: ArrayLike | torch.Tensor | None = None,
    components: dict[str, Any] | None = None,
) -> Path:
    """Write the report of a run folder (``varclust fit --out RUN``) and return its page.

    The scores (ACC/NMI/ARI, the mean assignment entropy), the table of cluster sizes and
    weights and the real members of each cluster use the whole data set; the latent map, the
    confusion matrix, the entropy histogram and the InferenceData use ``num_data`` data points
    drawn at random (seeded), and the page says so. Also drawn: samples per cluster beside
    real members, the training curve, and, when ``compare`` names other run folders fitted to
    the same data set, a ranking of the runs with ACC/NMI and clusters in use per run:

    - when every run has a posterior over its global parameters (:func:`has_global_posterior`:
      ``dp``, mean-field ``bayes-gmm``), ``az.compare`` of their InferenceData on the drawn
      data, which is PSIS-LOO (ELPD and SE; ``az.plot_compare``);
    - otherwise (any point-estimate fit: ``gmm``, ``normal``, MAP ``bayes-gmm``) LOO over its
      draws would not be leave-one-out (see :mod:`varclust.analysis.inference_data`), so the
      runs are ranked by the importance-weighted log-likelihood per datum
      (:func:`~varclust.analysis.heldout.heldout_table`: mean, se, diff to the best and its
      paired diff_se; :func:`~varclust.analysis.plot_heldout`) with
      ``num_samples * importance_samples`` proposals per datum. On ``heldout`` data when given;
      else on the drawn data, which the runs were trained on, and the page says that this is
      in-sample, not leave-one-out.

    Args:
        run: the run folder. out: where to write (default ``RUN/report``).
        compare: more run folders to rank against this one.
        num_samples, importance_samples: draws for the InferenceData (written as NetCDF).
        method: "pca" or "tsne" for the latent map.
        arrays: (X.npy, y.npy or None), the data of runs that record none (see
            :func:`varclust.analysis.run_data.load_run`).
        heldout: (M, ...) data none of the runs was trained on, for the importance-weighted
            comparison (unused when every run has a global posterior: that is PSIS-LOO).
        components: your own prior, guide, ... objects the runs were fitted with, as
            :meth:`VarClust.load` takes them (``{"prior": MyPrior}``).
    """
    run = Path(run)
    out_dir = Path(out) if out is not None else run / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    root = Path(data_root) if data_root is not None else None
    vc, dataset, data = _run_data(run, root, arrays, components)
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

    with torch.random.fork_rng(devices=[vc.device] if vc.device.type == "cuda" else []):
        torch.manual_seed(seed)  # the report's draws repeat; the caller's RNG is left as it was
        samples = [vc.sample(c, 8) for c in range(k)]
    plot_cluster_samples(samples, out_dir / "samples.png",
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
        fits = {run.name: vc}
        assigned = {run.name: (pred_all.labels, k)}
        for other in map(Path, compare):
            other_vc, other_dataset, _ = _run_data(other, root, arrays, components)
            if other_dataset != dataset:
                raise ValueError(
                    f"{other} was fitted to {other_dataset!r}, {run} to {dataset!r}: "
                    "only fits to the same data set can be compared"
                )
            name = other.name if other.name not in fits else str(other)
            fits[name] = other_vc
            assigned[name] = (other_vc.predict(data.images).labels,
                              other_vc.config.num_clusters)
        if all(map(has_global_posterior, fits.values())):
            table, figure = _compare_loo(fits, idata, x, assigned, y_all, out_dir,
                                         num_samples, importance_samples, seed)
        else:
            table, figure = _compare_iwll(fits, x, heldout, assigned, y_all, out_dir,
                                          num_samples * importance_samples, seed)
        tables.append(table)
        figures.append(figure)

    page = out_dir / PAGE_NAME
    page_text = _html(run, dataset, (len(x), len(data)), vc, scores, figures, tables)
    write_atomic(page, page_text.encode())
    return page


def _compare_loo(fits: dict[str, VarClust], idata: az.InferenceData, x: torch.Tensor,
                 assigned: dict[str, tuple[np.ndarray, int]], y_all: np.ndarray | None,
                 out_dir: Path, num_samples: int, importance_samples: int, seed: int
                 ) -> tuple[tuple[str, str], Figure]:
    """PSIS-LOO of runs that all have posterior draws of their globals: ``az.compare`` of their
    InferenceData on the drawn data ``x`` (the first run's is ``idata``)."""
    first, *others = fits
    idatas = {first: idata}
    for name in others:
        idatas[name] = to_inference_data(fits[name], x, num_samples,
                                         importance_samples=importance_samples, seed=seed)
    comparison = az.compare(idatas)
    plot_compare(comparison, out_dir / "compare.png",
                 title="PSIS-LOO over posterior draws of the globals (higher is better)")
    note = (f"<p>Every run has a posterior over its global parameters, so each of its "
            f"{num_samples} draws is a draw of them and <code>az.compare</code> is PSIS-LOO: "
            f"the expected log predictive density of each of the {len(x)} drawn data left out "
            f"(ELPD, its SE; each log p(x_i | g) an importance-weighted estimate from "
            f"{importance_samples} proposals).</p>")
    title = (f"Comparison by PSIS-LOO (ELPD on the {len(x)} drawn data; ACC, NMI and clusters "
             "in use on all data)")
    table = note + html_table(
        ["run", "rank", "ELPD (LOO)", "SE", "ACC", "NMI", "clusters in use"],
        comparison_rows(comparison, assigned, y_all))
    figure = Figure("compare.png", "az.plot_compare of the runs: PSIS-LOO over posterior draws "
                    "of the global parameters, each log p(x_i | g) an importance-weighted "
                    "estimate (see varclust.analysis.inference_data).")
    return (title, table), figure


def _compare_iwll(fits: dict[str, VarClust], x: torch.Tensor, heldout: ArrayLike | None,
                  assigned: dict[str, tuple[np.ndarray, int]], y_all: np.ndarray | None,
                  out_dir: Path, num_particles: int, seed: int
                  ) -> tuple[tuple[str, str], Figure]:
    """The importance-weighted log-likelihood per datum of runs among which at least one is a
    point estimate, on ``heldout`` data when given, else on the drawn data ``x``."""
    in_sample = heldout is None
    scored = x if in_sample else heldout
    comparison = heldout_table(heldout_pointwise(fits, scored, num_particles, seed=seed))
    num_data = int(comparison["num_data"].iloc[0])
    what = (f"importance-weighted log-likelihood of the {num_data} drawn data (in-sample, not "
            "leave-one-out)" if in_sample else
            f"importance-weighted log-likelihood of {num_data} held-out data")
    plot_heldout(comparison, out_dir / "compare.png", title=what + ", per datum")
    point = [name for name, vc in fits.items() if not has_global_posterior(vc)]
    note = (f"<p>Not PSIS-LOO: {', '.join(point)} "
            f"{'has' if len(point) == 1 else 'have'} point estimates of the global parameters, "
            "not a posterior, so LOO over their draws would measure Monte Carlo noise. Each run "
            f"is scored by log p(x_i | fit), estimated with {num_particles} proposals of its "
            "guide per datum (a lower bound that rises with the proposals): the mean per datum "
            "(nats) and its se, and the difference to the best run with the se of the paired "
            "per-datum differences (diff_se). "
            + ("The runs were trained on these data, so this measures how well they fit them, "
               "not how well they predict new data; pass held-out data for that."
               if in_sample else "None of the runs was trained on these data.")
            + "</p>")
    title = f"Comparison by {what} (ACC, NMI and clusters in use on all data)"
    table = note + html_table(
        ["run", "rank", "mean per datum", "se", "diff", "diff_se", "ACC", "NMI",
         "clusters in use"],
        heldout_rows(comparison, assigned, y_all))
    figure = Figure("compare.png", f"The runs ranked by the {what}: mean +- se per datum "
                    "(left), difference to the best +- its paired se (right).")
    return (title, table), figure


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
