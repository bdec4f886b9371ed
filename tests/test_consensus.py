"""The consensus of several fits (matching their clusters, averaging), the term that teaches it
to one fit (against a hand computation), its checks, and ``--restarts R --consensus W``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from synthetic import binary_blobs

from varclust import FitConfig, VarClust
from varclust.cli import main
from varclust.inference.checkpoint import CheckpointError
from varclust.inference.consensus import (
    ConsensusTargets,
    consensus_responsibilities,
    match_clusters,
    read_consensus,
    write_consensus,
)
from varclust.inference.regularisers import regularisers_of, terms_outside_elbo
from varclust.metrics import clustering_scores
from varclust.restarts import CONSENSUS_FOLDER, CONSENSUS_TARGETS, RESTARTS_FILE, fit_restarts


def _posteriors(labels: np.ndarray, k: int, sharp: float = 0.9) -> np.ndarray:
    """(N, K) posteriors that put ``sharp`` on each datum's label and the rest evenly."""
    r = np.full((len(labels), k), (1 - sharp) / (k - 1))
    r[np.arange(len(labels)), labels] = sharp
    return r


def test_match_clusters_undoes_a_permutation():
    rng = np.random.default_rng(0)
    reference = rng.dirichlet(np.ones(4) * 0.3, size=50)
    permuted = reference[:, [2, 0, 3, 1]]
    np.testing.assert_array_equal(match_clusters(reference, permuted), reference)


def test_the_consensus_is_the_majority_of_fits_whose_cluster_numbers_differ():
    truth = np.repeat(np.arange(3), 20)
    wrong = truth.copy()
    wrong[:15] = 1  # one fit puts 15 of cluster 0's 20 data in cluster 1
    fits = [_posteriors(truth, 3)[:, [1, 2, 0]],  # the truth, numbered otherwise
            _posteriors(truth, 3)[:, [2, 1, 0]],
            _posteriors(wrong, 3)]
    consensus = consensus_responsibilities(fits)
    assert consensus.shape == (60, 3)
    np.testing.assert_allclose(consensus.sum(1), 1.0)
    # the two fits that agree outvote the third on every datum
    assert clustering_scores(truth, consensus.argmax(1))["acc"] == 1.0
    # by hand, datum 0 (cluster 0): two fits put 0.9 on its cluster, the third 0.05
    assert consensus.max(1)[0] == pytest.approx((0.9 + 0.9 + 0.05) / 3)


def test_the_consensus_refuses_what_it_cannot_combine():
    with pytest.raises(ValueError, match="at least 2 fits"):
        consensus_responsibilities([np.ones((4, 2)) / 2])
    with pytest.raises(ValueError, match="same data and K"):
        consensus_responsibilities([np.ones((4, 2)) / 2, np.ones((5, 2)) / 2])


def test_the_consensus_term_is_w_n_times_the_mean_kl_from_the_targets():
    targets = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5]])
    term = ConsensusTargets(2.0, targets)
    log_q = torch.log_softmax(torch.tensor([[0.3, -1.0, 0.2], [1.5, 0.1, -0.4]]), -1)
    indices = torch.tensor([2, 1])
    loss = term.loss(None, None, None, indices, 100, log_q)
    # by hand: KL(t || q) = sum_k t_k (log t_k - log q_k), 0 log 0 = 0
    q = log_q.exp().numpy()
    kl = [sum(t * (np.log(t) - np.log(qk)) for t, qk in zip(targets[i], q[b]) if t > 0)
          for b, i in enumerate([2, 1])]
    assert float(loss) == pytest.approx(2.0 * 100 * np.mean(kl), rel=1e-5)
    # the targets themselves: KL 0
    exact = torch.log(torch.tensor(targets[[0, 2]], dtype=torch.float32))
    assert float(term.loss(None, None, None, torch.tensor([0, 2]), 100, exact)) == (
        pytest.approx(0.0, abs=1e-4))


def test_the_targets_file_is_checked_against_the_fit(tmp_path):
    path = tmp_path / "t.npy"
    write_consensus(path, _posteriors(np.arange(6) % 2, 2))
    assert read_consensus(path, 6, 2).shape == (6, 2)
    with pytest.raises(ValueError, match=r"are \(6, 2\), but the fit has 7 data and 2"):
        read_consensus(path, 7, 2)
    with pytest.raises(ValueError, match="cannot read the consensus targets"):
        read_consensus(tmp_path / "missing.npy", 6, 2)
    np.save(tmp_path / "bad.npy", np.ones((6, 2)))
    with pytest.raises(ValueError, match="one distribution over the clusters a row"):
        read_consensus(tmp_path / "bad.npy", 6, 2)
    with pytest.raises(ValueError, match="go together"):
        FitConfig(consensus_targets=1.0)
    with pytest.raises(ValueError, match="consensus_targets must be >= 0"):
        FitConfig(consensus_targets=-1.0, consensus_file=str(path))
    config = FitConfig(num_clusters=2, consensus_targets=1.5, consensus_file=str(path))
    assert terms_outside_elbo(config) == ["consensus_targets"]
    (term,) = regularisers_of(config, torch.zeros(6, 1, 2, 2))
    assert term.weight == 1.5 and tuple(term.targets.shape) == (6, 2)


TINY = FitConfig(num_clusters=3, latent_dim=2, hidden=(32,), epochs=20, pretrain_epochs=0,
                 batch_size=30, guide="relaxed", cluster_information=1.0, cluster_balance=12.0,
                 learning_rate=0.01, device="cpu")


def test_restarts_with_a_consensus_fit_it_and_keep_it(tmp_path):
    x, y = binary_blobs(90, num_pixels=16, seed=1)
    x = torch.as_tensor(x).reshape(90, 1, 4, 4)
    out = tmp_path / "r"
    result = fit_restarts(TINY, x, restarts=2, out_dir=out, consensus=20.0, progress=False)
    kept = out / CONSENSUS_FOLDER
    assert result.best is result.consensus and result.best not in result.fits
    record = json.loads((out / RESTARTS_FILE).read_text())
    assert record["kept_folder"] == CONSENSUS_FOLDER
    assert record["consensus"] == {"weight": 20.0, "targets": CONSENSUS_TARGETS,
                                   "folder": CONSENSUS_FOLDER, "of_seeds": [0, 1]}
    targets = np.load(out / CONSENSUS_TARGETS)
    expected = consensus_responsibilities([f.predict(x).responsibilities for f in result.fits])
    np.testing.assert_allclose(targets, expected, atol=1e-6)
    loaded = VarClust.load(kept, device="cpu")
    assert loaded.config.consensus_targets == 20.0 and loaded.config.seed == 0
    metrics = json.loads((kept / "metrics.json").read_text())
    assert "consensus_targets" in metrics["objective_terms_outside_elbo"]
    # the term taught the fit its targets' partition
    agreement = clustering_scores(targets.argmax(1), loaded.predict(x).labels)["acc"]
    assert agreement >= 0.9
    # resuming with one more epoch continues the consensus fit on the same targets, also
    # after the restarts folder was moved (the targets are checked by content, not by path)
    moved = tmp_path / "moved"
    out.rename(moved)
    longer = fit_restarts(TINY.replace(epochs=21), x, restarts=2, out_dir=moved, consensus=20.0,
                          resume=True, progress=False)
    assert len(longer.best.history) == 21
    np.testing.assert_array_equal(np.load(moved / CONSENSUS_TARGETS), targets)
    # other targets at the recorded place are refused, naming the setting
    other = tmp_path / "other.npy"
    write_consensus(other, targets[:, ::-1])
    with pytest.raises(CheckpointError, match="consensus_file: the checkpoint's file held other"):
        VarClust(config=longer.best.config.replace(consensus_file=str(other), epochs=22)).fit(
            x, out_dir=moved / CONSENSUS_FOLDER, resume=True, progress=False)


def test_a_consensus_refuses_what_it_cannot_do():
    x = torch.rand(30, 1, 4, 4)
    with pytest.raises(ValueError, match="at least 2 restarts"):
        fit_restarts(TINY, x, restarts=1, consensus=1.0)
    with pytest.raises(ValueError, match="drop select_after"):
        fit_restarts(TINY, x, restarts=2, consensus=1.0, select_after=1)
    with pytest.raises(ValueError, match="consensus must be >= 0"):
        fit_restarts(TINY, x, restarts=2, consensus=-1.0)


def test_cli_consensus(tmp_path, capsys):
    out = tmp_path / "c"
    common = ["fit", "--dataset", "digits", "--out", str(out), "--hidden", "32",
              "--latent-dim", "3", "--pretrain-epochs", "0", "--epochs", "1", "--quiet"]
    assert main([*common, "--consensus", "1"]) == 2
    assert "--consensus fits the consensus of restarts" in capsys.readouterr().err
    assert main([*common, "--restarts", "2", "--consensus", "1"]) == 0
    printed = capsys.readouterr().out
    assert "kept the consensus fit" in printed and "<- chosen" in printed
    assert (out / CONSENSUS_FOLDER / "samples.png").exists()
    # the restarts folder names the consensus fit as the one to give
    assert main(["evaluate", str(out)]) == 2
    assert f"is {out / CONSENSUS_FOLDER}; give that folder" in capsys.readouterr().err
    assert main(["evaluate", str(out / CONSENSUS_FOLDER)]) == 0
