"""How a fit shows progress (issue 15, defect 7)."""

from __future__ import annotations

import sys

import pytest

from varclust.inference.progress import Progress


def test_true_means_bars_on_a_terminal_and_lines_elsewhere(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert Progress(True).mode == "lines"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert Progress(True).mode == "bars"
    assert Progress(False).mode == "off" and Progress("lines").mode == "lines"
    with pytest.raises(ValueError, match="progress must be"):
        Progress("loud")


def test_lines_print_every_number_of_the_record(capsys):
    Progress("lines").line("svi epoch", 3, 10, {"epoch": 3, "elbo": -12.345678, "acc": 0.5})
    assert capsys.readouterr().out == "varclust: svi epoch 3/10: elbo -12.35, acc 0.5\n"
    Progress("bars").line("svi epoch", 3, 10, {"elbo": 1.0})
    Progress("off").line("svi epoch", 3, 10, {"elbo": 1.0})
    assert capsys.readouterr().out == ""
