"""The GPU figures in one command: ClusterDDPM at the paper's scale, from scratch with conv
networks, SVI time to ACC, speed.

    python benchmarks/gpu_suite.py --device cuda --data-root DIR    # about 50 min on one H100
    python benchmarks/gpu_suite.py --tiny                            # the same wiring, CPU, seconds

Sections, run in this order within the time budget (``--budget-minutes``, default 50): the
ClusterDDPM fit takes half of it and the from-scratch fits 0.4 (all of the nine tenths when only
one of the two runs: ``--sections scratch --budget-minutes 12`` gives it about 11 minutes), the
time to ACC and the speed figures what is left:

1. **ClusterDDPM fit** (``fit``): Fashion-MNIST, all 70000 images, as ClusterDDPM's code runs
   MNIST: conv encoder to D = 32, conditional U-Net of width 64, T = 400 with betas 1e-4..0.02
   (``diffusion_schedule="clusterddpm"``), latent dropout 0.1, noise loss weight 10 against the
   KL (its 1 : 0.1), batch 128, Adam 1e-4 constant, 10 epochs of diffusion-autoencoder
   pretraining, then EM iterations of one M-step epoch and the ClusterDDPM E-step
   (scikit-learn's GaussianMixture refitted on sampled codes). The first iteration is timed and
   the fit resumed for as many iterations as its share of the budget holds (at most
   ``--em-iterations``, default 570 as the paper). Writes the per-iteration history and a
   per-cluster sample grid (PNG; ancestral sampler over all T steps).
2. **From scratch, MLP against conv networks** (``scratch``): issue 12's Fashion-MNIST goal
   (mean ACC >= 0.63 with sd <= 0.03 over 5 seeds, from scratch) with the networks a 2-core CPU
   cannot afford: ``varclust fit --dataset fashion-mnist --recipe scratch --guide relaxed
   --network conv|mlp --seed S`` (one process each, as a user runs it;
   ``benchmarks/cli_recipe.py``), seeds 0, 1, ... with both networks until its share of the
   budget is spent (a seed is started only if the last seed's pair of fits fits in what is left;
   ``--resume``, so that a rerun into the same ``--out`` continues the fits a time limit stopped).
   On the CPU a conv training step costs about 10 times the MLP's (BENCHMARKS.md, issue 12).
3. **SVI time to ACC** (``time-to-acc``): ``benchmarks/speed.py time-to-acc`` (the default MLP
   model from a cold start to ACC 0.55 on Fashion-MNIST).
4. **Speed** (``speed``): ``benchmarks/speed.py overhead`` and ``growth``.

Everything lands in ``--out`` (default ``benchmarks/results/gpu_suite_<device>``):
``gpu_suite.json`` (every section's numbers, the machine, the date) and the PNG grid; a section
with the figures is appended to ``--benchmarks-md`` (default BENCHMARKS.md; with ``--tiny``,
``OUT/BENCHMARKS_tiny.md`` so a smoke run never edits the real one). ``--tiny`` runs the same
code on the UCI digits with toy sizes on the CPU (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import cli_recipe  # noqa: E402  (benchmarks/cli_recipe.py)
import speed  # noqa: E402  (benchmarks/speed.py)
from quality import sd_text, summarise  # noqa: E402  (benchmarks/quality.py)

from varclust import FitConfig, VarClust, clustering_scores, load_dataset  # noqa: E402
from varclust.analysis.plots import plot_cluster_samples  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

#: the two scales: the paper's (GPU) and a smoke run (CPU, seconds)
PLANS: dict[str, dict] = {
    "full": {
        "dataset": "fashion-mnist", "subset": 0, "em_iterations": 570,
        "shares": {"fit": 0.5, "scratch": 0.4},
        "config": dict(num_clusters=10, latent_dim=32, network="conv", generator="ddpm",
                       method="em", e_step="clusterddpm", ddpm_pretrain="diffusion",
                       pretrain_epochs=10, pretrain_reliance=0.0, pretrain_lr=1e-4,
                       learning_rate=1e-4, em_lr_decay=1.0, batch_size=128, m_step_epochs=1,
                       diffusion_width=64, diffusion_steps=400,
                       diffusion_schedule="clusterddpm", diffusion_weight=10.0,
                       latent_dropout=0.1, sample_steps=0),
        "samples_per_cluster": 10,
        "scratch": {"dataset": "fashion-mnist", "seeds": 5, "networks": ["mlp", "conv"],
                    "flags": "--recipe scratch --guide relaxed"},
        "time_to_acc": ["--epochs", "10", "--pretrain-epochs", "10"],
        "speed": {"overhead": [], "growth": []},
    },
    "tiny": {
        "dataset": "digits", "subset": 300, "em_iterations": 2,
        "shares": {"fit": 0.7, "scratch": 0.1},
        "config": dict(num_clusters=3, latent_dim=4, network="mlp", hidden=(32,),
                       generator="ddpm", method="em", e_step="clusterddpm",
                       ddpm_pretrain="diffusion", pretrain_epochs=1, pretrain_reliance=0.0,
                       pretrain_lr=1e-3, learning_rate=1e-3, batch_size=100, m_step_epochs=1,
                       diffusion_width=8, diffusion_steps=10, diffusion_schedule="clusterddpm",
                       diffusion_weight=10.0, sample_steps=0),
        "samples_per_cluster": 2,
        # the conv decoder makes 28 x 28 or 32 x 32 images, not the digits' 8 x 8: MLP only
        "scratch": {"dataset": "digits", "seeds": 2, "networks": ["mlp"],
                    "flags": "--recipe scratch --guide relaxed --epochs 1 --hidden 32"},
        "time_to_acc": ["--dataset", "digits", "--subset", "300", "--epochs", "1",
                        "--pretrain-epochs", "1", "--target", "0.3"],
        "speed": {"overhead": ["--rounds", "2", "--warmup", "1", "--no-jit", "--batch", "16"],
                  "growth": ["--rounds", "2", "--warmup", "1", "--guides", "marginal",
                             "--ks", "2", "4", "--batches", "8", "16", "--batch", "16"]},
    },
}

#: the sections, in the order they run
SECTIONS = ["fit", "scratch", "time-to-acc", "speed"]


def section_budgets(shares: dict[str, float], sections: list[str],
                    budget_s: float) -> dict[str, float]:
    """The seconds each budgeted section in ``sections`` may take: its share of ``budget_s``,
    the shares of the sections run scaled up to the sum of all the shares (a section run alone
    gets what the budgeted sections together would; the rest is left to the unbudgeted ones)."""
    run = {name: share for name, share in shares.items() if name in sections}
    scale = sum(shares.values()) / sum(run.values()) if run else 0.0
    return {name: share * scale * budget_s for name, share in run.items()}


def fit_section(plan: dict, device: str, out: Path, budget_s: float) -> dict:
    """The ClusterDDPM fit: one EM iteration timed, then resumed for as many as fit the
    budget. Returns the section's numbers; writes the sample grid."""
    data = load_dataset(plan["dataset"])
    images, labels = data.images, data.labels.numpy()
    if plan["subset"]:
        images, labels = images[: plan["subset"]], labels[: plan["subset"]]
    run = out / "clusterddpm_run"
    config = FitConfig(**plan["config"], em_iterations=1, device=device)
    t0 = time.perf_counter()
    vc = VarClust(config=config).fit(images, labels, out_dir=run, progress=False)
    first = time.perf_counter() - t0
    reliance = vc.latent_reliance  # measured after pretraining
    per_iteration = vc.history[-1]["seconds"]
    left = budget_s - first
    iterations = int(max(1, min(plan["em_iterations"], 1 + left // max(per_iteration, 1e-3))))
    vc = VarClust(config=config.replace(em_iterations=iterations))
    vc.fit(images, labels, out_dir=run, resume=True, progress=False)
    seconds = time.perf_counter() - t0
    scores = clustering_scores(labels, vc.predict(images).labels)
    weights = vc.model.prior.point_parameters()["log_weights"].detach().exp()
    t1 = time.perf_counter()
    torch.manual_seed(0)
    grids = [vc.sample(k, plan["samples_per_cluster"]) for k in range(config.num_clusters)]
    sampling = time.perf_counter() - t1
    grid = out / "clusterddpm_samples.png"
    plot_cluster_samples(grids, grid, title="ClusterDDPM (EM, ddpm generator): row k = cluster k")
    return {
        "dataset": plan["dataset"], "num_data": len(images), "config": vc.config.to_dict(),
        "em_iterations": iterations, "seconds": seconds,
        "seconds_first_iteration_with_pretraining": first,
        "seconds_per_iteration": per_iteration, "scores": scores,
        "smallest_cluster_weight": float(weights.min()),
        "latent_reliance": reliance, "history": vc.history,
        "sampling_seconds": sampling, "samples_png": grid.name,
    }


def scratch_section(plan: dict, device: str, out: Path, budget_s: float) -> dict:
    """The from-scratch recipe with each network of ``plan["scratch"]``, seed after seed, each
    fit a ``varclust fit --resume`` process into ``out/scratch/NETWORK_SEED`` (the suite rerun
    into the same ``--out`` after a time limit continues each fit where it stopped and reads a
    finished one back); the next seed only while the last seed's fits fit in what is left of
    ``budget_s``. Returns the section's numbers: per network its rows
    (:func:`cli_recipe.run_seed`) and their mean +- sd."""
    spec = plan["scratch"]
    rows: dict[str, list[dict]] = {network: [] for network in spec["networks"]}
    start, last_seed = time.perf_counter(), 0.0
    for seed in range(spec["seeds"]):
        if seed and time.perf_counter() - start + last_seed > budget_s:
            break
        seed_start = time.perf_counter()
        for network in spec["networks"]:
            flags = f"{spec['flags']} --network {network} --device {device} --resume"
            rows[network].append(cli_recipe.run_seed(
                spec["dataset"], seed, flags, 0, out / "scratch" / f"{network}_{seed}"))
        last_seed = time.perf_counter() - seed_start
    return {"dataset": spec["dataset"], "flags": spec["flags"], "budget_s": budget_s,
            "networks": {network: {"rows": r, "summary": summarise(r)}
                         for network, r in rows.items()}}


def speed_section(name: str, argv: list[str], device: str, out: Path) -> dict:
    """Run ``benchmarks/speed.py NAME`` in this process with its JSON written into ``out``."""
    speed.RESULTS = out
    speed.main([name, "--device", device, *argv])
    kind = torch.device(device).type
    file = {"time-to-acc": "time_to_acc"}.get(name, name)
    return json.loads((out / f"speed_{file}_{kind}.json").read_text())


def markdown(summary: dict) -> str:
    """The BENCHMARKS.md section of a suite run."""
    fit = summary.get("fit", {})
    lines = [f"\n## GPU suite ({summary['plan']}), {summary['date']}\n",
             f"`{summary['command']}` on {summary['device_name']} ({summary['machine']}); "
             f"{summary['seconds']:.0f} s in all. JSON: `{summary['json']}`.\n"]
    if fit:
        s = fit["scores"]
        lines += [
            "| ClusterDDPM fit | images | EM iterations | ACC | NMI | ARI | smallest weight "
            "| latent reliance | seconds (per iteration) |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {fit['dataset']} | {fit['num_data']} | {fit['em_iterations']} | {s['acc']:.4f} | "
            f"{s['nmi']:.4f} | {s['ari']:.4f} | {fit['smallest_cluster_weight']:.3f} | "
            f"{fit['latent_reliance']:.3f} | {fit['seconds']:.0f} "
            f"({fit['seconds_per_iteration']:.1f}) |",
            "", f"![ClusterDDPM samples]({summary['png']})", ""]
    scratch = summary.get("scratch")
    if scratch:
        lines += [f"From scratch on {scratch['dataset']}, `varclust fit {scratch['flags']} "
                  "--network N --seed S`, one process a fit (mean +- sd over the seeds):", "",
                  "| network | seeds | ACC | NMI | ARI | seconds of SVI epochs a fit |",
                  "|---|---|---|---|---|---|"]
        for network, entry in scratch["networks"].items():
            stats = entry["summary"]
            cells = " | ".join(f"{stats[m]['mean']:.3f} {sd_text(stats[m])}"
                               for m in cli_recipe.METRICS)
            epochs = sum(row["epoch_seconds"] for row in entry["rows"]) / len(entry["rows"])
            lines.append(f"| {network} | {stats['acc']['n']} | {cells} | {epochs:.0f} |")
        lines.append("")
    tta = summary.get("time_to_acc")
    if tta:
        reached = tta.get("time_to_target_s")
        lines.append(f"SVI time to ACC {tta['target_acc']}: "
                     f"{f'{reached:.1f} s' if reached is not None else 'not reached'} "
                     f"(pretraining + init {tta['phase_a_seconds']:.1f} s, median SVI epoch "
                     f"{tta['svi_epoch_seconds_median']:.2f} s).")
    over = summary.get("overhead", {}).get("results", {})
    if over:
        lines.append("\n| step (overhead section) | ms | images/s | / hand-written |")
        lines.append("|---|---|---|---|")
        lines += [f"| {k} | {v['median_ms']:.2f} | {v['images_per_s']:.0f} | "
                  f"{v['ratio_to_hand_written']:.3f} |" for k, v in over.items()]
    growth = summary.get("growth", {}).get("guides", {})
    for guide, entry in growth.items():
        if isinstance(entry, dict):
            slopes = ", ".join(f"{axis} {v['loglog_slope']:.2f}" for axis, v in entry.items())
            lines.append(f"\nGrowth, guide {guide}: log-log slope of step time over {slopes}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (seconds)")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    parser.add_argument("--data-root", type=Path, help="data folder (sets $VARCLUST_DATA)")
    parser.add_argument("--out", type=Path, help="results folder")
    parser.add_argument("--benchmarks-md", type=Path, help="the Markdown file to append to")
    parser.add_argument("--budget-minutes", type=float, default=50.0)
    parser.add_argument("--em-iterations", type=int, help="the most EM iterations of the fit")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=SECTIONS)
    args = parser.parse_args(argv)
    plan_name = "tiny" if args.tiny else "full"
    plan = dict(PLANS[plan_name])
    if args.em_iterations is not None:
        plan["em_iterations"] = args.em_iterations
    device = args.device or ("cpu" if args.tiny else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: run on a GPU machine, or pass --tiny (CPU smoke run)")
    if args.data_root is not None:
        os.environ["VARCLUST_DATA"] = str(args.data_root)
    out = args.out or ROOT / "benchmarks" / "results" / f"gpu_suite_{torch.device(device).type}"
    out.mkdir(parents=True, exist_ok=True)
    md = args.benchmarks_md or (out / "BENCHMARKS_tiny.md" if args.tiny else ROOT / "BENCHMARKS.md")
    budgets = section_budgets(plan["shares"], args.sections, 60 * args.budget_minutes)
    t0 = time.perf_counter()
    summary: dict = {
        "plan": plan_name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/gpu_suite.py " + " ".join(argv or sys.argv[1:]),
        "machine": platform.platform(), "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "CPU",
    }
    path = out / "gpu_suite.json"
    summary["json"] = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    summary["png"] = os.path.relpath(out / "clusterddpm_samples.png", md.parent)

    def save() -> None:
        """Write the sections run so far, so that a run stopped by a time limit keeps them."""
        summary["seconds"] = time.perf_counter() - t0
        path.write_text(json.dumps(summary, indent=2, default=str))

    if "fit" in args.sections:
        summary["fit"] = fit_section(plan, device, out, budgets["fit"])
        save()
    if "scratch" in args.sections:
        summary["scratch"] = scratch_section(plan, device, out, budgets["scratch"])
        save()
    if "time-to-acc" in args.sections:
        summary["time_to_acc"] = speed_section("time-to-acc", plan["time_to_acc"], device, out)
        save()
    if "speed" in args.sections:
        for name, extra in plan["speed"].items():
            summary[name] = speed_section(name, extra, device, out)
            save()  # --sections takes at least one, so the JSON is complete here
    with open(md, "a") as f:
        f.write(markdown(summary))
    print(f"wrote {path} and appended the figures to {md} ({summary['seconds']:.0f} s)")
    return summary


if __name__ == "__main__":
    main()
