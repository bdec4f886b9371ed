"""The report's numbers (issue 15, defect 10): scores on the whole data (the page says which
data each part uses), a table of cluster sizes and weights, real members of each cluster, and a
comparison table with --compare."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from varclust import VarClust, load_dataset
from varclust.analysis import PointEstimateWarning, heldout_log_likelihood
from varclust.analysis.report import write_report
from varclust.analysis.report_tables import cluster_members, cluster_rows, heldout_rows
from varclust.cli import main

TINY = ["--dataset", "digits", "--epochs", "1", "--pretrain-epochs", "2", "--hidden", "32",
        "--latent-dim", "4", "--quiet"]
SMALL_REPORT = ["--num-data", "60", "--num-samples", "4", "--importance-samples", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("report")
    a, b = base / "a", base / "b"
    assert main(["fit", *TINY, "--out", str(a)]) == 0
    assert main(["fit", *TINY, "--out", str(b), "--clusters", "5", "--seed", "1"]) == 0
    return a, b


def _section(page: str, start: str) -> str:
    part = page[page.index(start):]
    return part[: part.index("</table>")]


def test_report_scores_the_whole_data_and_tables_the_clusters(runs):
    a, b = runs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["report", str(a), *SMALL_REPORT, "--compare", str(b)]) == 0
    # only a's own InferenceData (the NetCDF) is of a point estimate; the comparison of the two
    # gmm runs draws no LOO over point estimates
    assert sum(issubclass(w.category, PointEstimateWarning) for w in caught) == 1
    page = (a / "report" / "index.html").read_text()
    assert "use all 1797 data" in page and "60 data drawn at random" in page
    data = load_dataset("digits")
    vc = VarClust.load(a, device="cpu")
    acc = vc.score(data.images, data.labels.numpy())["acc"]
    assert f"<th>acc</th><td>{acc:.4f}</td>" in page  # whole data, not the 60 drawn
    # the cluster table: K rows whose counts add up to N, with the prior's weights
    table = _section(page, "Clusters (all data)")
    counts = [int(c) for c in re.findall(r"<tr><td>\d+</td><td>(\d+)</td>", table)]
    assert len(counts) == 10 and sum(counts) == 1797
    weights = vc.mixture_["weights"]
    assert f"<td>{weights[0]:.3f}</td>" in table
    # two point-estimate (gmm) runs: ranked by the importance-weighted log-likelihood of the
    # drawn data, labelled in-sample, not by LOO
    comparison = _section(page, "Comparison")
    assert ("Comparison by importance-weighted log-likelihood of the 60 drawn data "
            "(in-sample, not leave-one-out)") in comparison
    assert "ELPD" not in comparison and "PSIS-LOO</" not in comparison
    for header in ("mean per datum", "se", "diff", "diff_se"):
        assert f"<th>{header}</th>" in comparison
    assert ">a<" in comparison and ">b<" in comparison
    assert re.search(r"<td>\d+ / 5</td>", comparison) and re.search(r"<td>\d+ / 10</td>",
                                                                      comparison)
    # the numbers are heldout_log_likelihood's on the same 60 drawn data, 4 x 2 proposals each
    drawn = torch.randperm(1797, generator=torch.Generator().manual_seed(0))[:60].sort().values
    fits = {"a": vc, "b": VarClust.load(b, device="cpu")}
    expected = heldout_log_likelihood(fits, data.images[drawn], 8, seed=0)
    for name, entry in expected.iterrows():
        assert f"<td>{name}</td><td>{int(entry['rank'])}</td><td>{entry['mean']:.2f}</td>" \
            in comparison
    assert "real members of cluster k" in page


def test_report_compare_on_held_out_data_says_so(runs, tmp_path):
    a, b = runs
    data = load_dataset("digits")
    page = write_report(a, tmp_path, compare=[b], num_data=40, num_samples=4,
                        importance_samples=2, heldout=data.images[:30]).read_text()
    comparison = _section(page, "Comparison")
    assert "importance-weighted log-likelihood of 30 held-out data" in comparison
    assert "in-sample" not in comparison


@pytest.fixture(scope="module")
def dp_runs(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("report-dp")
    a, b = base / "dp-a", base / "dp-b"
    for run, k in ((a, "6"), (b, "4")):
        assert main(["fit", *TINY, "--prior", "dp", "--dp-settle-steps", "0", "--clusters", k,
                     "--out", str(run)]) == 0
    return a, b


def test_report_compares_runs_with_global_posteriors_by_psis_loo(dp_runs):
    a, b = dp_runs
    with warnings.catch_warnings():
        warnings.simplefilter("error", PointEstimateWarning)
        assert main(["report", str(a), *SMALL_REPORT, "--compare", str(b)]) == 0
    comparison = _section((a / "report" / "index.html").read_text(), "Comparison")
    assert "Comparison by PSIS-LOO (ELPD on the 60 drawn data" in comparison
    assert "<th>ELPD (LOO)</th>" in comparison and "<th>diff_se</th>" not in comparison
    assert "in-sample" not in comparison
    assert ">dp-a<" in comparison and ">dp-b<" in comparison


def test_heldout_rows_follow_the_table_order():
    import pandas as pd

    table = pd.DataFrame({"rank": [0, 1], "mean": [-80.0, -81.234], "se": [1.0, 1.1],
                          "diff": [0.0, 1.234], "diff_se": [0.0, 0.2], "num_data": [3, 3]},
                         index=["b", "a"])
    runs = {"a": (np.array([0, 0, 1]), 2), "b": (np.array([0, 1, 1]), 3)}
    rows = heldout_rows(table, runs, np.array([0, 1, 1]))
    assert rows[0] == ["b", "0", "-80.00", "1.00", "0.00", "0.00", "1.0000", "1.0000", "2 / 3"]
    assert rows[1][:6] == ["a", "1", "-81.23", "1.10", "1.23", "0.20"]
    assert rows[1][-1] == "2 / 2"


def test_samples_grid_shows_real_members_beside_the_samples():
    from varclust.analysis import plot_cluster_samples

    samples = [torch.zeros(3, 1, 4, 4), torch.zeros(3, 1, 4, 4)]
    members = [torch.ones(2, 1, 4, 4), torch.ones(1, 1, 4, 4)]
    fig = plot_cluster_samples(samples, members=members)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 3 + 3 + 2 + 1
    assert len(fig.axes) == 2 * (3 + 1 + 2)  # a blank column between samples and members


def test_cluster_members_are_the_surest_data_of_each_cluster():
    images = torch.arange(6.0)[:, None]
    labels = np.array([0, 1, 0, 0, 1, 1])
    resp = np.array([[0.9, 0.1, 0], [0.2, 0.8, 0], [0.6, 0.4, 0], [0.99, 0.01, 0],
                     [0.3, 0.7, 0], [0.1, 0.9, 0]])
    rows = cluster_members(images, labels, resp, per_cluster=2)
    assert [r[:, 0].tolist() for r in rows] == [[3.0, 0.0], [5.0, 1.0], []]


def test_cluster_rows_count_share_and_weight():
    rows = cluster_rows(np.array([0, 0, 0, 2]), np.array([0.5, 0.25, 0.25]))
    assert rows == [["0", "3", "75.0%", "0.500"], ["1", "0", "0.0%", "0.250"],
                    ["2", "1", "25.0%", "0.250"]]
