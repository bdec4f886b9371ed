"""benchmarks/gpu_suite.py end to end in its --tiny mode (CPU, seconds): the same code the GPU
run executes, on toy sizes."""

import json
import os
import subprocess
import sys
from pathlib import Path

from pytest import approx

SUITE = Path(__file__).parent.parent / "benchmarks" / "gpu_suite.py"


def test_the_gpu_suite_runs_end_to_end_in_tiny_mode(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# benchmarks\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SUITE), "--tiny", "--out", str(tmp_path / "out"),
                           "--benchmarks-md", str(md)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "gpu_suite.json").read_text())
    fit = summary["fit"]
    assert fit["em_iterations"] >= 1 and len(fit["history"]) == fit["em_iterations"]
    assert fit["config"]["diffusion_schedule"] == "clusterddpm"
    assert fit["config"]["e_step"] == "clusterddpm"
    assert 0 <= fit["scores"]["acc"] <= 1 and isinstance(fit["latent_reliance"], float)
    assert (tmp_path / "out" / fit["samples_png"]).stat().st_size > 0
    scratch = summary["scratch"]["networks"]["mlp"]
    assert [row["seed"] for row in scratch["rows"]] == [0, 1]
    assert "--network mlp" in scratch["rows"][0]["command"]
    assert "--resume" in scratch["rows"][0]["command"]  # a rerun continues a stopped fit
    assert scratch["summary"]["acc"]["n"] == 2 and 0 <= scratch["summary"]["acc"]["mean"] <= 1
    assert summary["time_to_acc"]["dataset"] == "digits"
    assert "hand-written" in summary["overhead"]["results"]
    assert "marginal" in summary["growth"]["guides"]
    text = md.read_text()
    assert text.startswith("# benchmarks\n")  # appended, not overwritten
    assert "## GPU suite (tiny)" in text and "clusterddpm_samples.png" in text
    assert "From scratch on digits" in text and "| mlp | 2 |" in text


def test_the_gpu_suite_refuses_cuda_without_a_gpu_and_names_the_fix(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    proc = subprocess.run([sys.executable, str(SUITE), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--tiny" in proc.stderr


def test_a_suite_stopped_after_its_fit_keeps_the_fit_in_its_json(tmp_path, monkeypatch):
    """Each section's figures are written as it ends: a run stopped later (a time limit on the
    GPU machine, here a failing speed section) still leaves gpu_suite.json with the fit."""
    import pytest

    monkeypatch.syspath_prepend(str(SUITE.parent))
    import gpu_suite

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt("stopped by the time limit")

    monkeypatch.setattr(gpu_suite, "speed_section", stopped)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        gpu_suite.main(["--tiny", "--out", str(out), "--sections", "fit", "time-to-acc"])
    summary = json.loads((out / "gpu_suite.json").read_text())
    assert summary["fit"]["em_iterations"] >= 1 and "time_to_acc" not in summary


def test_the_scratch_section_starts_a_seed_only_if_the_last_seeds_fits_fit_the_budget(
        tmp_path, monkeypatch):
    """Both networks run for every seed started; a seed is started only while the time of the
    last seed's fits fits in what is left of the section's budget (the first always runs)."""
    monkeypatch.syspath_prepend(str(SUITE.parent))
    import gpu_suite

    clock = iter(range(0, 1000, 10))  # every reading of the clock 10 s after the last
    monkeypatch.setattr(gpu_suite.time, "perf_counter", lambda: float(next(clock)))
    calls = []

    def fit(dataset, seed, flags, threads, folder):
        calls.append((seed, flags.split("--network ")[1].split()[0]))
        return {"seed": seed, "acc": 0.5, "nmi": 0.5, "ari": 0.5, "seconds": 1.0}

    monkeypatch.setattr(gpu_suite.cli_recipe, "run_seed", fit)
    plan = {"scratch": {"dataset": "fashion-mnist", "seeds": 5, "networks": ["mlp", "conv"],
                        "flags": "--recipe scratch"}}
    # clock: start 0, seed 0 from 10 to 20 (last seed 10 s); seed 1 checked at 30 (30 + 10 <=
    # 45), runs 40 to 50; seed 2 checked at 60: 60 + 10 > 45, not started
    section = gpu_suite.scratch_section(plan, "cpu", tmp_path, budget_s=45)
    assert calls == [(0, "mlp"), (0, "conv"), (1, "mlp"), (1, "conv")]
    assert section["networks"]["conv"]["summary"]["acc"]["n"] == 2


def test_a_section_run_alone_gets_the_budget_of_all_the_budgeted_sections(monkeypatch):
    monkeypatch.syspath_prepend(str(SUITE.parent))
    import gpu_suite

    shares = {"fit": 0.5, "scratch": 0.4}
    both = gpu_suite.section_budgets(shares, gpu_suite.SECTIONS, 600.0)
    assert both == approx({"fit": 300.0, "scratch": 240.0})
    alone = gpu_suite.section_budgets(shares, ["scratch", "speed"], 600.0)
    assert alone == approx({"scratch": 540.0})
    assert gpu_suite.section_budgets(shares, ["speed"], 600.0) == {}
