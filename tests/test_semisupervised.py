"""Semi-supervised fits: the same model conditions on the labels it is given."""

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from synthetic import binary_blobs

from varclust import VarClust, load_dataset


def one_percent_mask(n: int, seed: int = 0) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).choice(n, int(0.01 * n), replace=False)] = True
    return mask


@pytest.mark.slow
def test_one_percent_of_labels_beats_unsupervised_on_digits():
    data = load_dataset("digits")
    x, y = data.images, data.labels.numpy()
    mask = one_percent_mask(len(y))
    assert mask.sum() == 17
    settings = dict(latent_dim=10, hidden=(64,), epochs=15, pretrain_epochs=20,
                    batch_size=128, seed=0, device="cpu")
    unsupervised = VarClust(10, **settings).fit(x, y, progress=False)
    semi = VarClust(10, **settings).fit(x, y, labelled=mask, progress=False)
    acc_unsupervised = unsupervised.score(x, y)["acc"]
    acc_semi = semi.score(x, y)["acc"]
    assert acc_semi > acc_unsupervised + 0.01, (acc_semi, acc_unsupervised)
    # most labelled data sit in the cluster numbered by their label (chance: 0.1)
    labels = semi.predict(x).labels
    assert np.mean(labels[mask] == y[mask]) >= 0.75


@pytest.mark.parametrize("guide", ["marginal", "mixture", "relaxed"])
def test_labelled_clusters_are_observed_and_the_rest_enumerated(guide):
    vc = VarClust(3, latent_dim=2, hidden=(8,), guide=guide, pretrain_epochs=0, device="cpu")
    vc.build((4,))
    x = torch.rand(6, 4)
    cluster = torch.tensor([2, 0, 0, 1, 0, 0])
    mask = torch.tensor([True, False, False, True, False, False])
    pyro.set_rng_seed(0)
    guide_trace = poutine.trace(poutine.enum(vc.guide, first_available_dim=-2)).get_trace(
        x, cluster=cluster, cluster_mask=mask)
    model_trace = poutine.trace(poutine.replay(vc.model, trace=guide_trace)).get_trace(
        x, cluster=cluster, cluster_mask=mask)
    observed = model_trace.nodes["cluster_observed"]
    assert observed["is_observed"] and torch.equal(observed["mask"], mask)
    if guide == "relaxed":  # the relaxed w is drawn for the unlabelled data only
        for trace in (guide_trace, model_trace):
            assert torch.equal(trace.nodes["cluster_log_weights"]["mask"], ~mask)
        assert "cluster_unobserved" not in model_trace.nodes
    else:
        unobserved = model_trace.nodes["cluster_unobserved"]
        assert torch.equal(unobserved["mask"], ~mask)
    if guide == "mixture":  # enumerated in the guide, masked to the unlabelled data
        assert guide_trace.nodes["cluster_unobserved"]["infer"]["enumerate"] == "parallel"
        assert torch.equal(guide_trace.nodes["cluster_unobserved"]["mask"], ~mask)
    elif guide == "marginal":  # enumerated in the model
        assert unobserved["infer"]["enumerate"] == "parallel"
    if guide != "marginal":  # labelled data draw z from their label's code
        with torch.no_grad():
            _, locs, _ = vc.guide.heads(*vc.guide.encoder(x))
        q_loc = guide_trace.nodes["z"]["fn"].base_dist.loc.detach()
        for row in (0, 3):
            torch.testing.assert_close(q_loc[..., row, :],
                                       locs[row, cluster[row]].expand_as(q_loc[..., row, :]))


def test_bad_labelled_masks_are_refused():
    x = torch.rand(10, 4)
    y = np.arange(10) % 3
    vc = VarClust(3, latent_dim=2, hidden=(8,), epochs=1, pretrain_epochs=1, device="cpu")
    with pytest.raises(ValueError, match="boolean array of shape \\(10,\\)"):
        vc.fit(x, y, labelled=np.ones(10), progress=False)
    with pytest.raises(ValueError, match="needs the labels"):
        vc.fit(x, labelled=np.ones(10, bool), progress=False)
    with pytest.raises(ValueError, match="must lie in \\[0, 2\\]"):
        vc.fit(x, np.arange(10), labelled=np.ones(10, bool), progress=False)


@pytest.mark.parametrize("settings, words", [
    ({"prior": "normal"}, "refits a mixture to the codes"),
    ({"revive_clusters": 0.2}, "splits that ignore the labels"),
])
def test_settings_that_break_cluster_k_label_k_are_refused_before_the_folder(settings, words,
                                                                            tmp_path):
    x, y = binary_blobs(60, num_pixels=8)
    run = tmp_path / "run"
    vc = VarClust(3, latent_dim=2, hidden=(8,), epochs=1, pretrain_epochs=1, device="cpu",
                  **settings)
    with pytest.raises(ValueError, match=words):
        vc.fit(x, y, labelled=np.arange(60) % 4 == 0, out_dir=run, progress=False)
    assert not run.exists()  # nothing written for a fit that was refused


def test_a_labelled_fit_records_how_many_labelled_data_sit_in_their_labels_cluster():
    x, y = binary_blobs(90, num_pixels=12)
    labelled = np.arange(90) % 3 == 0
    vc = VarClust(3, latent_dim=2, hidden=(8,), epochs=2, pretrain_epochs=3, batch_size=30,
                  device="cpu").fit(x, y, labelled=labelled, progress=False)
    agreement = vc.history[-1]["labelled_agreement"]
    assert agreement == np.mean(vc.predict(x).labels[labelled] == y[labelled])


def test_the_scratch_recipe_leaves_its_revival_out_of_a_labelled_command():
    from varclust.cli import build_parser, config_from_args

    argv = ["fit", "--recipe", "scratch", "--labelled-fraction", "0.1", "--out", "unused"]
    args = build_parser().parse_args(argv)
    args.argv = argv
    assert config_from_args(args).revive_clusters == 0
