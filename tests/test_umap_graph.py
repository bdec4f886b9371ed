"""The UMAP graph term (``umap_graph``): its loss by hand, the graph, its draws, a fit with it
and its exact resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from synthetic import binary_blobs
from test_checkpoint import copy_run
from torch import nn

from varclust import FitConfig, VarClust
from varclust.inference import SVITrainer
from varclust.inference.umap_graph import (
    CURVE_A,
    CURVE_B,
    NEGATIVE_SAMPLES,
    UMAPGraphTerm,
    fuzzy_graph,
    umap_pair_losses,
)


class IdentityGuide(nn.Module):
    """A guide whose code of x is x itself."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, torch.ones_like(x)


def test_pair_losses_are_umaps_cross_entropy_by_hand():
    heads = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    tails = torch.tensor([[3.0, 4.0], [1.0, 1.5]])
    attract, repel = umap_pair_losses(heads, tails, True), umap_pair_losses(heads, tails, False)
    for d, got_attract, got_repel in zip([5.0, 0.5], attract, repel):
        w = 1.0 / (1.0 + CURVE_A * d ** (2 * CURVE_B))
        assert float(got_attract) == pytest.approx(-math.log(w), rel=1e-5)
        assert float(got_repel) == pytest.approx(-math.log(1 - w), rel=1e-5)


def test_loss_on_a_one_edge_graph_matches_a_hand_computation():
    data = torch.tensor([[0.0, 0.0], [0.6, 0.8], [5.0, 5.0]])
    term = UMAPGraphTerm(2.5, data, neighbours=2)
    # one edge 0 -> 1: every draw is that edge, every negative pair is (0, 1) too
    term.use_graph(data, torch.tensor([0]), torch.tensor([1]), torch.tensor([0.7]))
    batch = 4
    got = term.loss(IdentityGuide(), None, data[:batch], torch.arange(batch), 1000, None)
    w = 1.0 / (1.0 + CURVE_A * 1.0 ** (2 * CURVE_B))  # the distance is 1
    per_pair = (-math.log(w) + NEGATIVE_SAMPLES * -math.log(1 - w)) / (1 + NEGATIVE_SAMPLES)
    assert float(got) == pytest.approx(2.5 * 1000 * per_pair, rel=1e-5)


def test_fuzzy_graph_joins_neighbours_within_blobs_only():
    pytest.importorskip("umap")
    rng = np.random.default_rng(0)
    codes = torch.tensor(np.concatenate([rng.normal(0, 1, (60, 3)), rng.normal(40, 1, (60, 3))]),
                         dtype=torch.float32)
    heads, tails, strengths = fuzzy_graph(codes, 10)
    assert len(heads) == len(tails) == len(strengths) >= 60 * 10
    assert bool(((heads < 60) == (tails < 60)).all())  # no edge across the blobs
    assert bool((strengths > 0).all() & (strengths <= 1).all())
    # symmetric: each edge listed in both directions with one strength
    forward = dict(zip(zip(heads.tolist(), tails.tolist()), strengths.tolist()))
    assert all(forward[(j, i)] == pytest.approx(v) for (i, j), v in forward.items())
    again = fuzzy_graph(codes, 10)  # exact neighbours: the same graph
    torch.testing.assert_close(strengths, again[2])


def test_edges_are_drawn_in_proportion_to_their_strength():
    data = torch.zeros(4, 1)
    term = UMAPGraphTerm(1.0, data)
    term.use_graph(data, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]),
                   torch.tensor([0.1, 0.3, 0.6]))
    torch.manual_seed(0)
    heads, tails = term.draw_edges(60000)
    shares = torch.bincount(heads, minlength=3).double() / 60000
    torch.testing.assert_close(shares[:3], torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64),
                               atol=0.01, rtol=0)
    assert bool((tails == heads + 1).all())


def test_the_term_needs_a_graph_and_a_pretrained_encoder():
    term = UMAPGraphTerm(1.0, torch.zeros(3, 2))
    with pytest.raises(RuntimeError, match="no graph"):
        term.loss(IdentityGuide(), None, torch.zeros(2, 2), torch.arange(2), 3, None)
    with pytest.raises(ValueError, match="umap_neighbours must be >= 2"):
        FitConfig(umap_graph=1.0, umap_neighbours=1)
    with pytest.raises(ValueError, match="umap_graph must be >= 0"):
        FitConfig(umap_graph=-1.0)
    x, _ = binary_blobs(60)
    with pytest.raises(ValueError, match="set pretrain_epochs > 0"):
        VarClust(3, epochs=1, pretrain_epochs=0, umap_graph=1.0, latent_dim=2, hidden=(8,),
                 device="cpu").fit(x, progress=False)


SETTINGS = dict(latent_dim=2, hidden=(16,), pretrain_epochs=3, batch_size=32, seed=1,
                device="cpu", umap_graph=1.0, umap_neighbours=8)


def test_a_fit_with_the_term_records_it_and_resumes_exactly(tmp_path):
    pytest.importorskip("umap")
    x, labels = binary_blobs(120)
    first = VarClust(3, epochs=2, **SETTINGS).fit(x, labels, out_dir=tmp_path / "a",
                                                   progress=False)
    summary = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert summary["objective_terms_outside_elbo"] == ["umap_graph"]
    assert all(np.isfinite(h["elbo"]) for h in first.history)
    run = copy_run(tmp_path / "a", tmp_path / "b")
    resumed = VarClust(3, epochs=4, **SETTINGS).fit(x, labels, out_dir=run, resume=True,
                                                    progress=False)
    straight = VarClust(3, epochs=4, **SETTINGS).fit(x, labels, progress=False)
    np.testing.assert_allclose([h["elbo"] for h in resumed.history],
                               [h["elbo"] for h in straight.history], rtol=1e-5)
    for a, b in zip(resumed.guide.state_dict().values(), straight.guide.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the term changes the fit: without it the guide ends elsewhere
    plain = VarClust(3, epochs=4, **{**SETTINGS, "umap_graph": 0.0}).fit(x, progress=False)
    assert not all(torch.allclose(a, b) for a, b in zip(
        plain.guide.state_dict().values(), straight.guide.state_dict().values()))


def test_from_scratch_the_graph_is_built_at_umap_graph_epoch_and_resumes_exactly(
        tmp_path, monkeypatch):
    """Without pretraining, ``umap_graph_epoch`` = 1 builds the graph from the codes after the
    first epoch: that epoch is the plain fit's, the next ones are not, and a fit stopped as the
    second epoch starts (its last checkpoint has no graph) resumes with the same graph."""
    pytest.importorskip("umap")
    x, labels = binary_blobs(120)
    scratch = {**SETTINGS, "pretrain_epochs": 0, "umap_graph_epoch": 1}
    with_graph = VarClust(3, epochs=3, **scratch).fit(x, progress=False)
    plain = VarClust(3, epochs=3, **{**scratch, "umap_graph": 0.0}).fit(x, progress=False)
    elbos = [[h["elbo"] for h in fit.history] for fit in (with_graph, plain)]
    assert elbos[0][0] == pytest.approx(elbos[1][0], rel=1e-6)  # epoch 1: no graph yet
    assert elbos[0][2] != pytest.approx(elbos[1][2], rel=1e-4)  # the term acts after
    def stop_at_second_epoch(trainer, epoch: int, step: int) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(SVITrainer, "start_step", stop_at_second_epoch)
        with pytest.raises(KeyboardInterrupt):
            VarClust(3, epochs=3, **scratch).fit(x, labels, out_dir=tmp_path / "a",
                                                 progress=False)
    resumed = VarClust(3, epochs=3, **scratch).fit(x, labels, out_dir=tmp_path / "a",
                                                   resume=True, progress=False)
    np.testing.assert_allclose([h["elbo"] for h in resumed.history], elbos[0], rtol=1e-5)
    with pytest.raises(ValueError, match="umap_graph_epoch 3 is past the fit's last SVI epoch"):
        FitConfig(umap_graph=1.0, umap_graph_epoch=3, epochs=3)
    with pytest.raises(ValueError, match="with method='em'"):
        FitConfig(umap_graph=1.0, umap_graph_epoch=1, method="em")
