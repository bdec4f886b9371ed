"""The `varclust` command: the default digits fit, kill + resume, evaluate, sample, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from varclust.cli import main

SMALL = ["--hidden", "64,64", "--latent-dim", "4", "--pretrain-epochs", "2", "--quiet"]


def _history(run: Path) -> list[dict]:
    return json.loads((run / "metrics.json").read_text())["history"]


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "varclust.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_default_digits_fit_beats_kmeans_on_pixels(tmp_path: Path) -> None:
    """The README's main command with its defaults: ACC >= 0.80 on the UCI digits
    (k-means on the pixels gets 0.79 there; see BENCHMARKS.md)."""
    run = tmp_path / "digits"
    proc = _cli("fit", "--dataset", "digits", "--clusters", "10", "--out", str(run), "--quiet")
    out, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 0, out
    final = _history(run)[-1]
    assert final["acc"] >= 0.80, final
    for name in ("checkpoint.pt", "metrics.json", "samples.png", "loss.png"):
        assert (run / name).stat().st_size > 0


def test_killed_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["fit", "--dataset", "digits", "--out", str(run), "--epochs", "400", *SMALL]
    proc = _cli(*args)
    deadline = time.time() + 300
    while time.time() < deadline:
        if (run / "metrics.json").exists() and len(_history(run)) >= 2:
            break
        if proc.poll() is not None:
            pytest.fail(f"the run ended early: {proc.stdout.read()}")
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _history(run)
    assert 2 <= len(done) < 400
    resume = ["fit", "--dataset", "digits", "--out", str(run), "--epochs", str(len(done) + 2),
              *SMALL, "--resume"]
    assert main(resume) == 0
    history = _history(run)
    assert [h["epoch"] for h in history] == list(range(1, len(done) + 3))
    assert history[: len(done)] == done  # what was done before the kill is kept, not redone


def test_evaluate_and_sample_on_a_run(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["fit", "--dataset", "digits", "--out", str(run), "--epochs", "1", *SMALL]) == 0
    assert main(["evaluate", str(run)]) == 0
    scores = json.loads((run / "evaluation.json").read_text())
    assert scores["num_data"] == 1797 and 0.0 <= scores["acc"] <= 1.0
    assert scores["acc"] == pytest.approx(_history(run)[-1]["acc"])
    assert main(["sample", str(run), "--cluster", "3", "--num", "4"]) == 0
    assert (run / "samples_cluster3.png").stat().st_size > 0


def test_fit_from_another_runs_autoencoder(tmp_path: Path, capsys) -> None:
    base, other = tmp_path / "base", tmp_path / "relaxed"
    assert main(["fit", "--dataset", "digits", "--out", str(base), "--epochs", "0", *SMALL]) == 0
    assert main(["fit", "--dataset", "digits", "--out", str(other), "--epochs", "1",
                 "--guide", "relaxed", "--clusters", "12", "--pretrained", str(base),
                 *SMALL]) == 0
    pretrain = [json.loads((run / "metrics.json").read_text())["pretrain_losses"]
                for run in (base, other)]
    assert len(pretrain[0]) == 2 and pretrain[1] == pretrain[0]
    assert len(_history(other)) == 1
    capsys.readouterr()
    assert main(["fit", "--dataset", "digits", "--out", str(tmp_path / "wide"),
                 "--pretrained", str(base), *SMALL[:-1], "--hidden", "32", "--quiet"]) == 2
    assert "hidden: pretrained (64, 64) vs (32,)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["fit", "--dataset", "digits", "--clusters", "1"], "at least 2"),
        (["fit", "--dataset", "mnist", "--data-root", "EMPTY"], "not on disk"),
        (["evaluate", "NO_SUCH_RUN"], "no checkpoint"),
    ],
)
def test_errors_are_one_clear_line(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    args = [a.replace("EMPTY", str(tmp_path / "empty")).replace(
        "NO_SUCH_RUN", str(tmp_path / "missing")) for a in args]
    if args[0] == "fit":
        args += ["--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("varclust: error:")


def test_the_scratch_recipe_scales_its_schedule_to_the_data_set_and_the_typed_epochs(cli_config):
    """Warm-up over the first third on the digits (a sixth elsewhere), the learning rate's tail
    over the last sixth, of the recipe's epochs per data set or of the epochs typed; a typed
    schedule setting wins."""

    def config(*flags):
        c = cli_config(*flags)
        return c.epochs, c.kl_warmup_epochs, c.lr_decay_from

    assert config("--recipe", "scratch") == (120, 40, 100)  # the digits: measured so
    assert config("--recipe", "scratch", "--dataset", "fashion-mnist") == (10, 2, 8)
    assert config("--recipe", "scratch", "--epochs", "60") == (60, 20, 50)
    assert config("--recipe", "scratch", "--dataset", "fashion-mnist", "--epochs", "30",
                  "--kl-warmup-epochs", "1") == (30, 1, 25)
    assert config() == (60, 0, 0)  # the pretrained recipe picks no schedule
    # a typed flag that needs the recipe's warm-up is checked with it, not before it
    assert config("--recipe", "scratch", "--warm-up-terms") == (120, 40, 100)
    with pytest.raises(ValueError, match="kl_warmup_epochs is 0"):
        config("--cluster-information", "1", "--warm-up-terms")


def test_the_scratch_recipe_on_fashion_mnist_cools_the_guide_faster_on_narrow_networks(
        cli_config):
    """The measured Fashion-MNIST from-scratch settings (issue 12): the 256-256-1024 networks,
    the guide's temperature falling by 0.3 an epoch (its 1 100 steps an epoch are 39 of the
    digits' epochs), IMSAT's virtual adversarial term at eta 1, radius 1 and a learning rate of
    3e-3; the digits, EM and typed flags keep theirs."""

    def picked(*flags):
        c = cli_config(*flags)
        return (c.hidden, c.temperature_decay, c.virtual_adversarial, c.adversarial_radius,
                c.learning_rate)

    assert picked("--recipe", "scratch", "--dataset", "fashion-mnist") == (
        (256, 256, 1024), 0.3, 1.0, 1.0, 3e-3)
    assert picked("--recipe", "scratch") == ((500, 500, 2000), 0.93, 0.0, 0.35, 2e-3)
    assert picked("--recipe", "scratch", "--dataset", "mnist") == (
        (500, 500, 2000), 0.93, 0.0, 0.35, 2e-3)
    assert picked("--recipe", "scratch", "--dataset", "fashion-mnist", "--method", "em") == (
        (500, 500, 2000), 0.93, 0.0, 0.35, 2e-3)
    assert picked("--recipe", "scratch", "--dataset", "fashion-mnist", "--temperature-decay",
                  "0.93", "--hidden", "500,500,2000", "--virtual-adversarial", "0",
                  "--lr", "0.001") == ((500, 500, 2000), 0.93, 0.0, 1.0, 1e-3)


def test_the_pretrained_recipe_picks_full_covariances_for_svi_on_fashion_mnist(tmp_path, capsys,
                                                                               cli_config):
    """The measured Fashion-MNIST default (issue 16): SVI after pretraining fits gmm-full; the EM
    loop (whose E-step refits a diagonal mixture), the scratch recipe, other data sets and a
    typed --prior keep theirs."""

    def prior(*flags):
        return cli_config(*flags).prior

    assert prior("--dataset", "fashion-mnist") == "gmm-full"
    assert prior("--dataset", "fashion-mnist", "--method", "em") == "gmm"
    assert prior("--dataset", "fashion-mnist", "--recipe", "scratch") == "gmm"
    assert prior("--dataset", "fashion-mnist", "--prior", "gmm") == "gmm"
    assert prior("--dataset", "digits") == "gmm"
    assert prior("--dataset", "mnist") == "gmm"
    config_file = tmp_path / "em.json"
    config_file.write_text('{"method": "em"}')
    assert prior("--dataset", "fashion-mnist", "--config", str(config_file)) == "gmm"
    with pytest.raises(SystemExit):  # and --prior's help says so
        main(["fit", "--help"])
    shown = "".join(capsys.readouterr().out.split())  # argparse wraps lines, at hyphens too
    assert "--recipepretrainedwithsvionfashion-mnist:gmm-full" in shown


def test_the_pretrained_recipe_on_fashion_mnist_is_split_and_merge_on_narrow_networks(cli_config):
    """The measured Fashion-MNIST default (issue 16): the split-and-merge start, the 256-256-1024
    networks and 10 SVI epochs; each typed flag wins, and EM and other data sets keep theirs."""
    config = cli_config("--dataset", "fashion-mnist")
    assert (config.mixture_start, config.hidden, config.epochs, config.pretrain_epochs) == (
        "split-merge", (256, 256, 1024), 10, 40)
    typed = cli_config("--dataset", "fashion-mnist", "--mixture-start", "codes", "--hidden",
                       "500,500,2000", "--epochs", "30")
    assert (typed.mixture_start, typed.hidden, typed.epochs) == ("codes", (500, 500, 2000), 30)
    for other in (cli_config("--dataset", "digits"), cli_config("--dataset", "mnist"),
                  cli_config("--dataset", "fashion-mnist", "--method", "em")):
        assert (other.mixture_start, other.hidden) == ("codes", (500, 500, 2000))


def test_unknown_dataset_is_refused_by_the_parser(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--dataset", "imagenet", "--out", "x"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err


def test_recipe_scratch_trains_from_scratch_and_typed_flags_win(tmp_path: Path) -> None:
    """--recipe scratch: no pretraining and the scratch settings, except those typed."""
    from varclust.cli import RECIPES

    run = tmp_path / "scratch"
    assert main(["fit", "--dataset", "digits", "--recipe", "scratch", "--guide", "relaxed",
                 "--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--quiet",
                 "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    config = metrics["config"]
    recipe = RECIPES["scratch"].settings
    assert config["pretrain_epochs"] == 0 and metrics["pretrain_losses"] == []
    for key in ("cluster_information", "cluster_balance", "batch_size", "lr_decay",
                "revive_clusters"):
        assert config[key] == recipe[key], key
    assert config["epochs"] == 1  # typed on the command line; the schedule follows it
    assert (config["kl_warmup_epochs"], config["lr_decay_from"]) == (0, 1)
    assert metrics["objective_terms_outside_elbo"] == ["cluster_information"]
    assert metrics["moves_outside_elbo"] == ["revive_clusters"]
    assert len(metrics["history"]) == 1 and "cluster_information_nats" in metrics["history"][0]


def test_resume_keeps_the_seeded_labelled_mask_and_refuses_a_new_lr_decay(tmp_path: Path,
                                                                          capsys) -> None:
    """--resume takes the run's seed for the labelled mask (not only a retyped --seed), and a
    typed --lr-decay that differs from the run's is refused, not silently dropped."""
    run = tmp_path / "run"
    first = ["fit", "--dataset", "digits", "--out", str(run), "--epochs", "1", *SMALL,
             "--seed", "3", "--labelled-fraction", "0.1"]
    assert main(first) == 0
    resume = ["fit", "--dataset", "digits", "--out", str(run), "--epochs", "2", *SMALL,
              "--labelled-fraction", "0.1", "--resume"]
    assert main(resume) == 0
    assert len(_history(run)) == 2
    capsys.readouterr()
    assert main([*resume[:6], "3", *resume[7:], "--lr-decay", "0.5"]) != 0
    assert "lr_decay" in capsys.readouterr().err


def test_resume_honours_a_config_file_and_the_runs_method(tmp_path: Path, capsys) -> None:
    """On --resume a --config file's keys count as chosen (its em_iterations continue the
    run), and --lr-decay goes to the decay of the run's own method (EM's)."""
    run = tmp_path / "run"
    fit = ["fit", "--dataset", "digits", "--out", str(run), *SMALL]
    assert main([*fit, "--method", "em", "--em-iterations", "1"]) == 0
    longer = tmp_path / "longer.json"
    longer.write_text(json.dumps({"em_iterations": 2}))
    assert main([*fit, "--config", str(longer), "--resume"]) == 0
    assert len(_history(run)) == 2
    capsys.readouterr()
    assert main([*fit, "--lr-decay", "0.5", "--resume"]) != 0
    assert "em_lr_decay" in capsys.readouterr().err
