"""The notebook API (issue 15, defect 11): figures returned, not only written; the mixture,
cluster sizes and mean images as numpy; the scikit-learn-like methods; run folders written
from Python that the command line reads; --data X.npy."""

from __future__ import annotations

import json
import os

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from synthetic import binary_blobs

from varclust import VarClust
from varclust.analysis import (
    plot_cluster_samples,
    plot_confusion_matrix,
    plot_entropy_histogram,
    plot_latent_map,
    plot_training_curve,
)
from varclust.cli import main

K = 3


def blobs(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return binary_blobs(n, num_pixels=16, flip=0.05, seed=seed, clusters=K)


@pytest.fixture(scope="module")
def fitted() -> tuple[VarClust, np.ndarray, np.ndarray]:
    x, y = blobs()
    vc = VarClust(K, latent_dim=2, hidden=(16,), epochs=3, pretrain_epochs=20, batch_size=32,
                  seed=0, device="cpu")
    labels = vc.fit_predict(x, y, progress=False)
    np.testing.assert_array_equal(labels, vc.predict(x).labels)
    return vc, x, y


def test_plot_latent_map_of_a_model_returns_a_figure_and_writes_nothing(fitted, tmp_path,
                                                                         monkeypatch):
    vc, x, _ = fitted
    monkeypatch.chdir(tmp_path)
    fig = plot_latent_map(vc, x)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert os.listdir(tmp_path) == []
    assert plt.get_fignums() == []  # nothing left open in pyplot: shows once inline


def test_every_plot_returns_its_figure_and_writes_only_with_a_path(fitted, tmp_path):
    vc, x, y = fitted
    pred = vc.predict(x)
    figures = [
        plot_cluster_samples([vc.sample(k, 2) for k in range(K)]),
        plot_training_curve(vc.history),
        plot_latent_map(vc.encode(x), pred.labels, labels=y),
        plot_confusion_matrix(y, pred.labels),
        plot_entropy_histogram(pred.entropy, K),
    ]
    assert all(isinstance(f, Figure) for f in figures)
    assert isinstance(plot_training_curve(vc.history, tmp_path / "t.png"), Figure)
    assert (tmp_path / "t.png").stat().st_size > 0
    assert plt.get_fignums() == []


def test_sample_grid_labels_the_clusters_it_shows():
    fig = plot_cluster_samples([np.zeros((2, 4, 4))], row_labels=[7])
    assert fig.axes[0].get_title(loc="left") == "c=7"


def test_mixture_sizes_and_mean_images(fitted):
    vc, x, _ = fitted
    mix = vc.mixture_
    assert mix["weights"].shape == (K,) and mix["weights"].sum() == pytest.approx(1, abs=1e-5)
    assert mix["means"].shape == (K, 2) and mix["scales"].shape == (K, 2)
    assert (mix["scales"] > 0).all()
    np.testing.assert_allclose(mix["means"], vc.model.prior.loc.detach().numpy(), rtol=1e-6)
    assert vc.cluster_sizes_.shape == (K,) and vc.cluster_sizes_.sum() == len(x)
    np.testing.assert_array_equal(vc.cluster_sizes_, np.bincount(vc.predict(x).labels,
                                                                  minlength=K))
    means = vc.cluster_means(x)
    resp = vc.predict_proba(x)
    assert means.shape == (K, 16)
    np.testing.assert_allclose(means[1], (resp[:, 1:2] * x).sum(0) / resp[:, 1].sum(),
                               rtol=1e-4)


def test_sklearn_like_methods(fitted):
    vc, x, y = fitted
    proba = vc.predict_proba(x)
    assert proba.shape == (len(x), K)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    np.testing.assert_array_equal(vc.transform(x), vc.encode(x))
    torch.manual_seed(0)
    elbo = vc.score(x)
    assert isinstance(elbo, float) and np.isfinite(elbo)
    assert abs(elbo - vc.history[-1]["elbo"]) < 0.25 * abs(vc.history[-1]["elbo"])
    noise = np.random.default_rng(1).random(x.shape).astype(np.float32)
    assert vc.score(noise) < elbo  # held-out data unlike the training data score lower
    assert set(vc.score(x, y)) == {"acc", "nmi", "ari"}


def test_repr_says_what_the_model_is():
    unfitted = VarClust(4, latent_dim=3, device="cpu")
    assert repr(unfitted).startswith("VarClust(K=4, prior='gmm'") and "not fitted" in repr(
        unfitted)


def test_repr_of_a_fit(fitted):
    vc, x, _ = fitted
    text = repr(vc)
    assert f"fitted to {len(x)} x (16,)" in text and "3 epochs" in text and "acc" in text


def test_python_run_folder_is_read_by_evaluate_and_report(fitted, tmp_path, capsys):
    vc, x, y = fitted
    run = tmp_path / "mine"
    vc.save(run, x, y)
    assert main(["evaluate", str(run)]) == 0
    scores = json.loads((run / "evaluation.json").read_text())
    assert scores["num_data"] == len(x)
    assert scores["acc"] == pytest.approx(vc.score(x, y)["acc"])
    assert main(["report", str(run), "--num-data", "40", "--num-samples", "4",
                 "--importance-samples", "2"]) == 0
    assert (run / "report" / "index.html").exists()
    again = VarClust.load(run, device="cpu")
    np.testing.assert_array_equal(again.cluster_sizes_, vc.cluster_sizes_)


def test_save_without_data_says_how_to_give_them(fitted, tmp_path, capsys):
    vc, _, _ = fitted
    vc.save(tmp_path / "nodata")
    assert main(["evaluate", str(tmp_path / "nodata")]) == 2
    assert "vc.save(run, X, y)" in capsys.readouterr().err


def test_cli_fits_a_users_array(tmp_path, capsys):
    x, y = blobs()
    np.save(tmp_path / "X.npy", x)
    np.save(tmp_path / "y.npy", y)
    run = tmp_path / "run"
    assert main(["fit", "--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"),
                 "--clusters", "3", "--epochs", "1", "--pretrain-epochs", "2", "--hidden", "16",
                 "--latent-dim", "2", "--out", str(run), "--quiet"]) == 0
    assert "acc" in json.loads((run / "metrics.json").read_text())["history"][-1]
    assert main(["evaluate", str(run)]) == 0
    assert json.loads((run / "evaluation.json").read_text())["num_data"] == len(x)


def test_cli_data_errors_name_the_file(tmp_path, capsys):
    np.save(tmp_path / "X.npy", np.zeros((10, 4), dtype=np.uint8))
    assert main(["fit", "--data", str(tmp_path / "X.npy"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "X.npy" in err and "divide by 255" in err
    assert not (tmp_path / "r").exists()  # a refused fit leaves no empty run folder
    assert main(["fit", "--data", str(tmp_path / "missing.npy"), "--out",
                 str(tmp_path / "r")]) == 2
    assert "missing.npy" in capsys.readouterr().err


def test_save_refuses_another_runs_folder_but_updates_its_own(fitted, tmp_path):
    from varclust.inference.run_folder import RunFolderError

    vc, x, y = fitted
    other = VarClust(K, latent_dim=2, hidden=(16,), epochs=1, pretrain_epochs=1, batch_size=32,
                     seed=5, device="cpu")
    other.fit(x, out_dir=tmp_path / "other", progress=False)
    (tmp_path / "other" / "evaluation.json").write_text("{}")
    with pytest.raises(RunFolderError, match="already holds a run"):
        vc.save(tmp_path / "other", x, y)
    vc.save(tmp_path / "other", x, y, overwrite=True)
    assert not (tmp_path / "other" / "evaluation.json").exists()
    other.save(tmp_path / "mine", x)
    other.save(tmp_path / "mine", x, y)  # the same run again: updated in place
    assert (tmp_path / "mine" / "labels.npy").exists()


def test_evaluate_takes_the_data_of_a_run_that_records_none(fitted, tmp_path, capsys):
    vc, x, y = fitted
    run = tmp_path / "py"
    VarClust(K, latent_dim=2, hidden=(16,), epochs=1, pretrain_epochs=5, batch_size=32,
             device="cpu").fit(x, out_dir=run, progress=False)
    np.save(tmp_path / "X.npy", x)
    np.save(tmp_path / "y.npy", y)
    assert main(["evaluate", str(run)]) == 2
    assert "--data X.npy" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--data", str(tmp_path / "X.npy"), "--labels",
                 str(tmp_path / "y.npy")]) == 0
    assert json.loads((run / "evaluation.json").read_text())["num_data"] == len(x)
    assert main(["evaluate", str(run), "--labels", str(tmp_path / "y.npy")]) == 2
    assert "--labels goes with --data" in capsys.readouterr().err


@pytest.mark.parametrize("prior", ["normal", "bayes-gmm"])
def test_mixture_of_the_other_priors_is_the_one_behind_the_clusters(prior):
    x, _ = blobs()
    vc = VarClust(K, latent_dim=2, hidden=(16,), epochs=1, pretrain_epochs=5, batch_size=32,
                  prior=prior, device="cpu").fit(x, progress=False)
    mix = vc.mixture_
    assert mix["weights"].sum() == pytest.approx(1, abs=1e-5) and mix["means"].shape == (K, 2)
    # the clusters predict() assigns are those of this mixture: p(c | z) from its components
    z = torch.as_tensor(vc.encode(x))
    log_joint = torch.distributions.Normal(torch.as_tensor(mix["means"]), torch.as_tensor(
        mix["scales"])).log_prob(z[:, None]).sum(-1) + torch.as_tensor(mix["weights"]).log()
    agree = (log_joint.argmax(-1).numpy() == vc.predict(x).labels).mean()
    assert agree > 0.95
