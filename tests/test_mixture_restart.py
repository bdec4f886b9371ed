"""Restarting the mixture after an SVI epoch (``FitConfig.mixture_restart_epoch``): the move's
wiring, its record, and the settings it refuses."""

from __future__ import annotations

import json

import pytest
import torch
from ddp_worker import mixture_config, synthetic_mixture

from varclust import FitConfig, VarClust
from varclust.model.gmm import widen_by_code_scales
from varclust.model.mixture_fit import MIXTURE_STARTS


def scratch_config(**changes) -> dict:
    """The synthetic mixture from scratch with the relaxed guide (it has cluster heads)."""
    return {**mixture_config(), "pretrain_epochs": 0, "epochs": 2, "guide": "relaxed",
            **changes}


def test_the_restart_sets_prior_and_guide_to_the_start_after_its_epoch(tmp_path, monkeypatch):
    """After epoch E the prior and the guide's cluster heads hold what the configured start
    returned for the codes of every datum; the history marks E."""
    x, y = synthetic_mixture()
    calls = []

    def spy(codes, num_clusters, seed):
        _, loc, scale = MIXTURE_STARTS["codes"](codes, num_clusters, seed)
        calls.append(codes.clone())
        return torch.tensor([0.5, 0.3, 0.2]), loc, scale  # recognisable weights

    monkeypatch.setitem(MIXTURE_STARTS, "umap", spy)
    vc = VarClust(**scratch_config(mixture_start="umap", mixture_restart_epoch=2))
    vc.fit(x, y, out_dir=tmp_path, progress=False)
    assert len(calls) == 1 and calls[0].shape == (len(x), 2)  # once, on all the codes
    # nothing trained after the last epoch's restart: the prior is the start, in its order
    weights = vc.model.prior.weights.detach()
    torch.testing.assert_close(weights.sort().values, torch.tensor([0.2, 0.3, 0.5]))
    torch.testing.assert_close(vc.guide.heads.log_weight.detach(), weights.log())
    assert [h["mixture_restarted"] for h in vc.history] == [0, 1]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "mixture_restart_epoch" in metrics["moves_outside_elbo"]


def test_without_the_setting_nothing_restarts(monkeypatch):
    x, y = synthetic_mixture()

    def refuse(codes, num_clusters, seed):
        raise AssertionError("no mixture fit expected from scratch without the setting")

    monkeypatch.setitem(MIXTURE_STARTS, "codes", refuse)
    vc = VarClust(**scratch_config(epochs=1)).fit(x, y, progress=False)
    assert "mixture_restarted" not in vc.history[0]


@pytest.mark.parametrize("changes, message", [
    ({"mixture_restart_epoch": 3, "epochs": 2}, "mixture_restart_epoch must be in"),
    ({"mixture_restart_epoch": -1}, "mixture_restart_epoch must be in"),
    ({"mixture_restart_epoch": 1, "method": "em"}, "set it to 0 with method='em'"),
])
def test_bad_restart_epochs_name_the_fix(changes, message):
    with pytest.raises(ValueError, match=message):
        FitConfig(**changes)


def test_widening_by_the_code_scales_matches_a_hand_computation():
    """sigma_k^2 = sigma_k^2 (of the means) + sum_n r_nk s_n^2 / sum_n r_nk."""
    weights = torch.tensor([0.5, 0.5])
    loc = torch.tensor([[0.0], [10.0]])
    scale = torch.tensor([[1.0], [2.0]])
    code_loc = torch.tensor([[0.0], [0.5], [10.0]])  # r ~ one-hot: (1, 0), (1, 0), (0, 1)
    code_scale = torch.tensor([[1.0], [3.0], [2.0]])
    widened = widen_by_code_scales(weights, loc, scale, code_loc, code_scale)
    expected = torch.tensor([[(1.0 + (1.0 + 9.0) / 2) ** 0.5], [(4.0 + 4.0) ** 0.5]])
    torch.testing.assert_close(widened, expected, atol=1e-4, rtol=0)
