"""The command line's manners (issue 15, defects 6-9): Ctrl-C, output off a terminal, --quiet,
`sample`, abbreviations, defaults in --help."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from varclust.cli import build_parser, main

TINY = ["--dataset", "digits", "--pretrain-epochs", "1", "--hidden", "32", "--latent-dim", "4"]


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "varclust.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _epochs_done(run: Path) -> int:
    try:
        return len(json.loads((run / "metrics.json").read_text())["history"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


# ---------------------------------------------------------------- 6. Ctrl-C
def test_ctrl_c_prints_one_line_naming_the_checkpoint_and_resume(tmp_path):
    run = tmp_path / "run"
    # a user's Ctrl-C: SIGINT at its default in the child, even where the test runner was
    # started in the background (a shell's `&` ignores SIGINT, and children inherit that)
    proc = _cli("fit", *TINY, "--epochs", "400", "--out", str(run),
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while _epochs_done(run) < 2:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "interrupted" in lines[0] and str(run / "checkpoint.pt") in lines[0]
    assert "--resume" in lines[0]
    assert (run / "samples.png").stat().st_size > 0 and (run / "loss.png").exists()
    # and the run continues from there
    assert main(["fit", *TINY, "--epochs", str(_epochs_done(run) + 1), "--out", str(run),
                 "--resume", "--quiet"]) == 0


# ---------------------------------------------------------------- 7. output off a terminal
@pytest.mark.parametrize("quiet", [False, True], ids=["default", "quiet"])
def test_off_a_terminal_each_epoch_is_one_plain_line(tmp_path, quiet):
    proc = _cli("fit", *TINY, "--epochs", "2", "--out", str(tmp_path / "r"),
                *(["--quiet"] if quiet else []))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "\r" not in out + err  # no progress bars
    epochs = [line for line in out.splitlines() if "svi epoch" in line]
    assert [line.split(":")[1].strip().split()[-1] for line in epochs] == ["1/2", "2/2"]
    assert all("elbo" in line and "acc" in line for line in epochs)
    assert "pretrain epoch 1/1: loss" in out
    assert len(max(out.splitlines(), key=len)) < 400


# ---------------------------------------------------------------- 8. sample
@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("s") / "run"
    assert main(["fit", *TINY, "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    return out


def test_sample_of_one_cluster_is_labelled_with_it(run, monkeypatch):
    import varclust.cli as cli

    seen = {}
    real = cli.plot_cluster_samples

    def spy(grids, out, **kw):
        seen.update(kw)
        return real(grids, out, **kw)

    monkeypatch.setattr(cli, "plot_cluster_samples", spy)
    assert main(["sample", str(run), "--cluster", "7", "--num", "2"]) == 0
    assert list(seen["row_labels"]) == [7]


def test_sample_keeps_the_fits_samples_png(run):
    before = (run / "samples.png").read_bytes()
    assert main(["sample", str(run), "--num", "2", "--seed", "3"]) == 0
    assert (run / "samples.png").read_bytes() == before
    assert (run / "samples_seed3.png").stat().st_size > 0


# ---------------------------------------------------------------- 9. parsing and help
def test_abbreviated_flags_are_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--out", "x", "--epoch", "3"])
    assert "unrecognized arguments: --epoch" in capsys.readouterr().err


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("--batch-size BATCH_SIZE default: 256", "(default: 10)", "default 2e-3",
                  "default: mlp", "seeds every random draw (default: 0)"):  # 0 shown, too
        assert shown in text, shown
