"""The report's numbers (issue 15, defect 10): scores on the whole data (the page says which
data each part uses), a table of cluster sizes and weights, real members of each cluster, and a
comparison table with --compare."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from varclust import VarClust, load_dataset
from varclust.analysis.report_tables import cluster_members, cluster_rows
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


def test_report_scores_the_whole_data_and_tables_the_clusters(runs):
    a, b = runs
    assert main(["report", str(a), *SMALL_REPORT, "--compare", str(b)]) == 0
    page = (a / "report" / "index.html").read_text()
    assert "use all 1797 data" in page and "60 data drawn at random" in page
    data = load_dataset("digits")
    vc = VarClust.load(a, device="cpu")
    acc = vc.score(data.images, data.labels.numpy())["acc"]
    assert f"<th>acc</th><td>{acc:.4f}</td>" in page  # whole data, not the 60 drawn
    # the cluster table: K rows whose counts add up to N, with the prior's weights
    table = page[page.index("Clusters (all data)"):]
    table = table[: table.index("</table>")]
    counts = [int(c) for c in re.findall(r"<tr><td>\d+</td><td>(\d+)</td>", table)]
    assert len(counts) == 10 and sum(counts) == 1797
    weights = vc.mixture_["weights"]
    assert f"<td>{weights[0]:.3f}</td>" in table
    # the comparison table names both runs with their ELPD, scores and clusters in use
    comparison = page[page.index("Comparison"):]
    comparison = comparison[: comparison.index("</table>")]
    assert "ELPD (LOO)" in comparison and ">a<" in comparison and ">b<" in comparison
    assert re.search(r"<td>\d+ / 5</td>", comparison) and re.search(r"<td>\d+ / 10</td>",
                                                                      comparison)
    assert "real members of cluster k" in page


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
