"""The held-out comparison table against a computation by hand."""

import math

import numpy as np
import pytest

from varclust.analysis import heldout_table


def test_heldout_table_matches_a_hand_computation():
    a = [-1.0, -2.0, -3.0, -4.0]
    b = [-1.5, -2.0, -3.5, -5.0]
    c = [-0.5, -2.5, -2.0, -4.0]
    table = heldout_table({"a": a, "b": b, "c": c})
    # means: a -2.5, b -3.0, c -2.25: c is best
    assert list(table.index) == ["c", "a", "b"]
    assert list(table["rank"]) == [0, 1, 2]
    assert table.loc["a", "mean"] == pytest.approx(-2.5)
    # se of a: deviations (1.5, 0.5, -0.5, -1.5), sum of squares 5, / (n - 1) = 5 / 3
    assert table.loc["a", "se"] == pytest.approx(math.sqrt(5 / 3) / 2)
    # a against c: d = c - a = (0.5, -0.5, 1.0, 0.0), mean 0.25, deviations
    # (0.25, -0.75, 0.75, -0.25), sum of squares 1.25, var 1.25 / 3
    assert table.loc["a", "diff"] == pytest.approx(0.25)
    assert table.loc["a", "diff_se"] == pytest.approx(math.sqrt(1.25 / 3) / 2)
    # b against c: d = (1.0, -0.5, 1.5, 1.0), mean 0.75, deviations (0.25, -1.25, 0.75, 0.25),
    # sum of squares 0.0625 + 1.5625 + 0.5625 + 0.0625 = 2.25, var 0.75
    assert table.loc["b", "diff"] == pytest.approx(0.75)
    assert table.loc["b", "diff_se"] == pytest.approx(math.sqrt(0.75) / 2)
    assert table.loc["c", "diff"] == 0 and table.loc["c", "diff_se"] == 0
    assert (table["num_data"] == 4).all()


def test_heldout_table_needs_the_same_data_for_every_fit():
    with pytest.raises(ValueError, match="same number"):
        heldout_table({"a": np.zeros(3), "b": np.zeros(4)})
    with pytest.raises(ValueError, match="same number"):
        heldout_table({"a": np.zeros(1)})
