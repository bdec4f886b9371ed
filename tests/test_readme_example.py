"""The README's user-defined prior trains end to end, as written."""

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def custom_prior_example() -> str:
    text = README.read_text()
    section = text[text.index("## Swapping the prior, the guide and the likelihood"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_custom_prior_trains_end_to_end(capsys):
    code = custom_prior_example()
    assert "class UnitScaleMixture(MixturePrior)" in code
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    vc = namespace["vc"]
    assert type(vc.model.prior).__name__ == "UnitScaleMixture"
    assert len(vc.history) == 3 and np.isfinite([h["elbo"] for h in vc.history]).all()
    assert vc.history[-1]["elbo"] > vc.history[0]["elbo"]
    assert "'acc'" in capsys.readouterr().out
    pred = vc.predict(namespace["data"].images)
    assert pred.responsibilities.shape == (1797, 10)
    # the prior's means were learned
    assert vc.model.prior.loc.grad is not None or vc.model.prior.loc.requires_grad


# ---------------------------------------------------------------- issue 15: examples cluster
def digits_examples() -> list[str]:
    """Every ```python block of the README that fits the UCI digits (the Fashion-MNIST one is
    too large for the test suite)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    return [b for b in blocks if 'load_dataset("digits")' in b]


@pytest.mark.parametrize("index", range(2))
def test_readme_digits_examples_cluster(index, tmp_path, monkeypatch):
    """The README's examples do not end in a collapsed clustering (issue 15, defect 4)."""
    monkeypatch.chdir(tmp_path)
    examples = digits_examples()
    assert len(examples) >= 2
    namespace: dict = {}
    exec(compile(examples[index], str(README), "exec"), namespace)
    vc = namespace["vc"]
    last = vc.history[-1]
    assert vc.collapse_warning_ is None, vc.collapse_warning_
    assert last["clusters_used"] >= 8 and last["largest_cluster"] < 0.3, last
    assert last["acc"] > 0.5 and last["nmi"] > 0.45, last
