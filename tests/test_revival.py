"""Reviving dead clusters (``revive_clusters``): the split by hand, the guide's heads, the
config's refusals, and the move recorded in SVI and EM fits."""

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture
from synthetic import binary_blobs

from varclust import FitConfig, VarClust
from varclust.guides.base import ClusterGuide
from varclust.guides.cluster_heads import ClusterHeads
from varclust.inference.revival import revive_dead_clusters
from varclust.model.priors import GaussianMixturePrior


class _CodesAreData(ClusterGuide):
    """A guide whose code is the datum itself: q(c | x) = p(c | z = x)."""

    def encode(self, x):
        return x, torch.ones_like(x)


class _Model(torch.nn.Module):
    def __init__(self, prior):
        super().__init__()
        self.prior = prior


def _three_blobs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[-6.0, 0.0], [0.0, 0.0], [6.0, 0.0]])
    y = np.repeat(np.arange(3), n // 3)
    x = centres[y] + rng.normal(scale=0.7, size=(n, 2))
    return torch.tensor(x, dtype=torch.float32), y


def test_a_dead_cluster_takes_half_of_the_merged_one_as_computed_by_hand():
    """Two blobs merged in component 0, component 2 dead far away: the move puts the
    GaussianMixture(2) halves of component 0's codes into 0 and 2 (means and weight shares;
    the dead one's weight is shared out by the renormalisation), gives 2 the donor's scale,
    and the three blobs become three clusters."""
    x, y = _three_blobs()
    prior = GaussianMixturePrior(3, 2)
    old_scale = torch.tensor([[3.5, 1.0], [0.7, 0.7], [1.0, 1.0]])
    prior.set_mixture(torch.tensor([0.6, 0.3, 0.1]),
                      torch.tensor([[-3.0, 0.0], [6.0, 0.0], [100.0, 100.0]]), old_scale)
    model, guide = _Model(prior), _CodesAreData()
    before = prior.log_joint(x).argmax(-1).numpy()
    assert np.bincount(before, minlength=3)[2] == 0 and np.bincount(before)[0] >= 195

    splits = revive_dead_clusters(model, guide, x, min_fraction=0.05, seed=5)

    assert [(s.donor, s.revived) for s in splits] == [(0, 2)]
    halves = GaussianMixture(2, covariance_type="diag", random_state=5).fit(
        x[torch.as_tensor(before == 0)].double().numpy())
    assert torch.allclose(prior.loc[[0, 2]].detach(), torch.tensor(halves.means_).float(),
                          atol=1e-5)
    assert torch.allclose(prior.weights[[0, 2]].detach(),
                          0.6 * torch.tensor(halves.weights_).float() / 0.9, atol=1e-5)
    assert torch.allclose(prior.scale[2].detach(), old_scale[0], atol=1e-5)
    assert torch.allclose(prior.scale[1].detach(), old_scale[1], atol=1e-5)  # untouched
    after = prior.log_joint(x).argmax(-1).numpy()
    from varclust.metrics import clustering_scores
    assert clustering_scores(y, before)["acc"] < 0.7
    assert clustering_scores(y, after)["acc"] > 0.95


def test_no_dead_cluster_no_move():
    x, _ = _three_blobs()
    prior = GaussianMixturePrior(3, 2)
    prior.set_mixture(torch.full((3,), 1 / 3), torch.tensor([[-6.0, 0], [0, 0], [6.0, 0]]),
                      torch.ones(3, 2))
    loc = prior.loc.detach().clone()
    assert revive_dead_clusters(_Model(prior), _CodesAreData(), x, 0.05, seed=0) == []
    assert torch.equal(prior.loc.detach(), loc)


def test_the_guides_heads_split_as_the_prior():
    torch.manual_seed(0)
    heads = ClusterHeads(4, 3)
    torch.nn.init.normal_(heads.offset.weight)
    torch.nn.init.normal_(heads.offset.bias)
    before = {k: v.detach().clone() for k, v in heads.state_dict().items()}
    loc = torch.randn(2, 3)
    heads.split(1, 3, torch.tensor([0.25, 0.75]), loc)
    assert torch.allclose(heads.centre[[1, 3]], loc)
    assert torch.equal(heads.log_spread[3], before["log_spread"][1])
    expected = before["log_weight"][1] + torch.tensor([0.25, 0.75]).log()
    assert torch.allclose(heads.log_weight[[1, 3]], expected)
    weight = heads.offset.weight.view(2, 4, 3, 3)
    assert torch.equal(weight[:, 3], before["offset.weight"].view(2, 4, 3, 3)[:, 1])
    bias = heads.offset.bias.view(2, 4, 3)
    assert torch.equal(bias[:, 3], before["offset.bias"].view(2, 4, 3)[:, 1])
    for k in (0, 2):  # the other clusters untouched
        assert torch.equal(heads.centre[k], before["centre"][k])


@pytest.mark.parametrize("changes, words", [
    ({"revive_clusters": -0.1}, "revive_clusters must be in [0, 1/num_clusters)"),
    ({"revive_clusters": 0.2, "num_clusters": 10}, "revive_clusters must be in"),
    ({"revive_clusters": 0.01, "prior": "dp"}, "Dirichlet process"),
    ({"revive_clusters": 0.01, "prior": "normal"}, "refitted to the codes"),
])
def test_bad_revival_settings_are_refused(changes, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        FitConfig(**changes)


@pytest.mark.parametrize("method, guide", [("svi", "relaxed"), ("svi", "marginal"),
                                           ("em", "marginal")])
def test_fits_record_the_move_each_epoch(method, guide):
    x = torch.rand(90, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    vc = VarClust(4, latent_dim=2, hidden=(8,), epochs=2, em_iterations=2, pretrain_epochs=0,
                  batch_size=30, device="cpu", seed=3, guide=guide, method=method,
                  revive_clusters=0.2, prior="gmm")
    vc.fit(x, progress=False)
    counts = [record["revived_clusters"] for record in vc.history]
    assert len(counts) == 2 and all(isinstance(c, int) for c in counts)
    assert "revived_clusters" not in VarClust(4, latent_dim=2, hidden=(8,), epochs=1,
                                              pretrain_epochs=0, device="cpu").fit(
        x, progress=False).history[0]


@pytest.mark.parametrize("warm_up", [{"epochs": 4, "kl_warmup_epochs": 3},
                                     {"method": "em", "em_iterations": 4,
                                      "kl_warmup_iterations": 3}], ids=["svi", "em"])
def test_revival_waits_for_the_kl_weight_to_reach_one(warm_up):
    """Splits act from the epoch (EM: iteration) whose KL weight is 1, in either loop."""
    x, _ = binary_blobs(180, num_pixels=16)
    vc = VarClust(3, latent_dim=2, hidden=(16,), pretrain_epochs=0, batch_size=60,
                  device="cpu", revive_clusters=0.3, **warm_up).fit(x, progress=False)
    for record in vc.history:
        if record["kl_weight"] < 1:
            assert record["revived_clusters"] == 0, vc.history
    assert [r["kl_weight"] for r in vc.history][-1] == 1


def test_the_scratch_recipe_revives_clusters_except_with_priors_that_refuse_it(cli_config):
    config = cli_config
    assert config("--recipe", "scratch").revive_clusters == 0.02
    assert config("--recipe", "scratch", "--prior", "bayes-gmm").revive_clusters == 0.02
    for prior in ("dp", "normal"):  # the recipe leaves the move off; typed, it is refused
        assert config("--recipe", "scratch", "--prior", prior).revive_clusters == 0.0
        with pytest.raises(ValueError, match="revive_clusters cannot act"):
            config("--prior", prior, "--revive-clusters", "0.02")
    assert config().revive_clusters == 0.0
