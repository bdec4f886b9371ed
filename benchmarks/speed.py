"""Speed: Pyro's overhead against a hand-written ELBO, growth with K and batch, time to ACC.

    python benchmarks/speed.py overhead          # TraceEnum_ELBO vs hand-written, same process
    python benchmarks/speed.py growth            # step time over K and batch size, per guide
    python benchmarks/speed.py time-to-acc       # Fashion-MNIST from a cold start
    python benchmarks/speed.py all --device cuda

Every figure is the median of repeated runs after warm-up; on CUDA each run is timed between
``torch.cuda.synchronize()`` calls. Implementations that are compared are run in ONE process,
interleaved step by step (A, B, C, A, B, C, ...), so that a shared machine's changing load hits
them alike; the ratio reported is the median of the per-round ratios. The load average is
recorded beside every result. Each section prints a table and writes
``benchmarks/results/speed_<section>_<device>.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import JitTraceEnum_ELBO, TraceEnum_ELBO
from torch import Tensor
from torch.nn.functional import binary_cross_entropy_with_logits

from varclust import FitConfig, VarClust, clustering_scores, load_dataset
from varclust.inference import SVITrainer
from varclust.inference.speed import configure_fast_math

RESULTS = Path(__file__).parent / "results"
IMAGE_SHAPE = (1, 28, 28)
NUM_DATA = 70_000  # the ELBO is scaled to Fashion-MNIST's size


# ---------------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    steps: dict[str, Callable[[], None]], rounds: int, warmup: int, device: torch.device,
    cpu_times: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Wall-clock seconds per call of every step function, the functions taking turns in each
    round. ``cpu_times``, when given, receives the process's CPU seconds per call too: on a
    CPU shared with other jobs they are far less disturbed by the load than wall time."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
        for name in order:
            synchronize(device)
            t0, c0 = time.perf_counter(), time.process_time()
            steps[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
            if cpu_times is not None:
                cpu_times.setdefault(name, []).append(time.process_time() - c0)
    return times


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_json(section: str, device: torch.device, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"speed_{section}_{device.type}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n{title}")
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(str(h).rjust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths)))


# ---------------------------------------------------------------------------- problems
def build(num_clusters: int, device: torch.device, guide: str = "marginal", seed: int = 0,
          hidden: tuple[int, ...] = (500, 500, 2000)) -> VarClust:
    """A VarClust with built (untrained) model and guide on ``device`` for 28x28 images."""
    settings = dict(num_clusters=num_clusters, hidden=hidden, pretrain_epochs=0,
                    device=str(device), seed=seed)
    if guide != "marginal":
        settings["guide"] = guide
    pyro.set_rng_seed(seed)
    vc = VarClust(**settings)
    vc.build(IMAGE_SHAPE)
    return vc


def guide_available(guide: str) -> bool:
    return guide == "marginal" or "guide" in {f.name for f in fields(FitConfig)}


def batch_of(batch_size: int, device: torch.device, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch_size, *IMAGE_SHAPE, generator=g).to(device)
    indices = torch.randperm(NUM_DATA, generator=g)[:batch_size].to(device)
    return x, indices


def hand_written_loss(vc: VarClust, x: Tensor, num_data: int) -> Tensor:
    """-ELBO of the marginal guide in plain PyTorch, the cluster summed out by log-sum-exp:

    -(N / B) sum_i [ log p(x_i | z_i) + logsumexp_k (log pi_k + log N(z_i | mu_k, sigma_k))
                     - log q(z_i | x_i) ],   z_i = loc(x_i) + scale(x_i) * eps_i.
    """
    loc, scale = vc.guide.encoder(x)
    z = loc + scale * torch.randn_like(loc)
    logits = vc.model.decoder(z)
    log_px = -binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)
    prior = vc.model.prior
    log_pz_c = dist.Normal(prior.loc, prior.scale).log_prob(z.unsqueeze(-2)).sum(-1)
    log_pz = (log_pz_c + prior.weights.log()).logsumexp(-1)
    log_qz = dist.Normal(loc, scale).log_prob(z).sum(-1)
    return -(num_data / len(x)) * (log_px + log_pz - log_qz).sum()


class HandWrittenTrainer:
    """The same optimiser and clipping as :class:`SVITrainer`, on :func:`hand_written_loss`."""

    def __init__(self, vc: VarClust, learning_rate: float, compiled: bool = False) -> None:
        self.vc = vc
        self.params = [*vc.model.parameters(), *vc.guide.parameters()]
        fused = all(p.is_cuda for p in self.params) or None
        self.optimizer = torch.optim.Adam(self.params, lr=learning_rate, fused=fused)
        loss = lambda x, n: hand_written_loss(vc, x, n)  # noqa: E731
        self.loss = torch.compile(loss) if compiled else loss

    def step(self, x: Tensor, indices: Tensor, num_data: int) -> Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(x, num_data)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 10.0)
        self.optimizer.step()
        return loss.detach()


def check_same_elbo(vc: VarClust, x: Tensor, indices: Tensor) -> float:
    """|Pyro's loss - the hand-written loss| / |loss| for the same noise (a sanity check that the
    two compute one quantity)."""
    elbo = TraceEnum_ELBO(max_plate_nesting=1)(vc.model, vc.guide)
    pyro.set_rng_seed(5)
    a = elbo(x, indices, NUM_DATA).detach()
    pyro.set_rng_seed(5)
    b = hand_written_loss(vc, x, NUM_DATA).detach()
    return float((a - b).abs() / b.abs())


# ---------------------------------------------------------------------------- sections
def overhead(args, device: torch.device) -> dict:
    """images/s of one training step: Pyro's TraceEnum_ELBO (the library's SVITrainer) against
    the hand-written ELBO, same networks, batch and device."""
    base = build(args.clusters, device)
    x, indices = batch_of(args.batch, device)
    rel_diff = check_same_elbo(base, x, indices)
    lr = 1e-4

    variants: dict[str, Callable[[], None]] = {}
    hand = HandWrittenTrainer(copy.deepcopy(base), lr)
    variants["hand-written"] = lambda: hand.step(x, indices, NUM_DATA)
    lib = SVITrainer(*_copies(base), lr)
    variants["TraceEnum_ELBO (library)"] = pyro_step(lib, x, indices, validate=False)
    lib_val = SVITrainer(*_copies(base), lr)
    variants["TraceEnum_ELBO, validation on"] = pyro_step(lib_val, x, indices, validate=True)
    errors = {}
    if args.jit:
        jit = SVITrainer(*_copies(base), lr)
        jit.elbo = JitTraceEnum_ELBO(max_plate_nesting=1, ignore_jit_warnings=True)(
            jit.model, jit.guide)
        variants["JitTraceEnum_ELBO"] = pyro_step(jit, x, indices, validate=False)
    if args.compile:
        compiled = HandWrittenTrainer(copy.deepcopy(base), lr, compiled=True)
        variants["hand-written + torch.compile"] = lambda: compiled.step(x, indices, NUM_DATA)
    for name in list(variants):  # drop what does not run here, saying why
        try:
            variants[name]()
        except Exception as err:  # noqa: BLE001 - reported in the table and the JSON
            errors[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            del variants[name]
    load_before = load_average()
    cpu: dict[str, list[float]] = {}
    times = interleaved_times(variants, args.rounds, args.warmup, device, cpu)
    rows, results = [], {}
    for name, ts in times.items():
        ratios = [a / b for a, b in zip(ts, times["hand-written"])]
        cpu_ratios = [a / b for a, b in zip(cpu[name], cpu["hand-written"])]
        med, cpu_med = statistics.median(ts), statistics.median(cpu[name])
        results[name] = {
            "median_ms": 1e3 * med,
            "images_per_s": args.batch / med,
            "ratio_to_hand_written": statistics.median(ratios),
            "ratio_quartiles": [float(q) for q in np.quantile(ratios, [0.25, 0.75])],
            "cpu_median_ms": 1e3 * cpu_med,
            "cpu_ratio_to_hand_written": statistics.median(cpu_ratios),
            "cpu_ratio_quartiles": [float(q) for q in np.quantile(cpu_ratios, [0.25, 0.75])],
            "times_s": ts,
            "cpu_times_s": cpu[name],
        }
        rows.append([name, f"{1e3 * med:.1f}", f"{args.batch / med:.0f}",
                     f"{statistics.median(ratios):.3f}", f"{1e3 * cpu_med:.1f}",
                     f"{statistics.median(cpu_ratios):.3f}"])
    for name, err in errors.items():
        rows.append([name, "-", "-", err[:60], "-", "-"])
    print_table(
        f"Pyro overhead: one SVI step, batch {args.batch}, K={args.clusters}, {device}, "
        f"median of {args.rounds} interleaved rounds (load {load_before})",
        ["implementation", "wall ms/step", "images/s", "wall / hand-written", "CPU ms/step",
         "CPU / hand-written"], rows)
    print(f"same ELBO check: relative difference {rel_diff:.2e}")
    payload = {"section": "overhead", "batch": args.batch, "num_clusters": args.clusters,
               "rounds": args.rounds, "warmup": args.warmup, "load_average_before": load_before,
               "load_average_after": load_average(), "same_elbo_relative_difference": rel_diff,
               "results": results, "errors": errors}
    print(f"wrote {write_json('overhead', device, payload)}")
    return payload


def pyro_step(trainer: SVITrainer, x: Tensor, indices: Tensor, validate: bool = False
              ) -> Callable[[], None]:
    """One step of the library's trainer, with Pyro's argument validation on or off (the
    library's training loop runs with it off)."""
    def step() -> None:
        with pyro.validation_enabled(validate):
            trainer.step(x, indices, NUM_DATA)
    return step


def _copies(vc: VarClust):
    twin = copy.deepcopy(vc)
    return twin.model, twin.guide


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def growth(args, device: torch.device) -> dict:
    """Step time of the library's SVITrainer as K and the batch size grow, for each guide."""
    payload = {"section": "growth", "rounds": args.rounds, "warmup": args.warmup,
               "load_average_before": load_average(), "guides": {}}
    for guide in args.guides:
        if not guide_available(guide):
            print(f"\nguide {guide!r}: not in this version of varclust (pending)")
            payload["guides"][guide] = "pending: not available in this version"
            continue
        entry = {}
        for axis, values, fixed in (("num_clusters", args.ks, args.batch),
                                    ("batch_size", args.batches, args.clusters)):
            rows, medians, cpu_medians = [], [], []
            for v in values:
                k, b = (v, fixed) if axis == "num_clusters" else (fixed, v)
                vc = build(k, device, guide)
                trainer = SVITrainer(vc.model, vc.guide, 1e-4)
                step = pyro_step(trainer, *batch_of(b, device))
                cpu: dict[str, list[float]] = {}
                ts = interleaved_times({"step": step}, args.rounds, args.warmup, device, cpu)
                med, cpu_med = statistics.median(ts["step"]), statistics.median(cpu["step"])
                medians.append(med)
                cpu_medians.append(cpu_med)
                rows.append([k, b, f"{1e3 * med:.1f}", f"{b / med:.0f}", f"{1e3 * cpu_med:.1f}",
                             str(load_average()[0])])
            slope, cpu_slope = loglog_slope(values, medians), loglog_slope(values, cpu_medians)
            entry[axis] = {"values": values, "fixed": fixed, "median_s": medians,
                           "cpu_median_s": cpu_medians, "loglog_slope": slope,
                           "cpu_loglog_slope": cpu_slope}
            print_table(f"growth over {axis}, guide {guide}, {device} (log-log slope: wall "
                        f"{slope:.2f}, CPU time {cpu_slope:.2f})",
                        ["K", "batch", "wall ms/step", "images/s", "CPU ms/step", "load"], rows)
        payload["guides"][guide] = entry
    payload["load_average_after"] = load_average()
    print(f"wrote {write_json('growth', device, payload)}")
    return payload


def time_to_acc(args, device: torch.device) -> dict:
    """Seconds from a cold start (data loading, pretraining and the mixture fit included) until
    an SVI epoch ends with ACC >= target on Fashion-MNIST (``--dataset``).

    Phase A runs ``fit`` with 0 SVI epochs (load, build, pretrain, GaussianMixture init) and is
    timed whole; phase B resumes it for ``--epochs`` SVI epochs, whose per-epoch seconds the fit
    records (the per-epoch scoring is not counted). Time to ACC = A + the SVI epochs until the
    target is first met (A alone when the initialisation already meets it).
    """
    config = FitConfig(num_clusters=10, epochs=0, pretrain_epochs=args.pretrain_epochs,
                       batch_size=args.batch, seed=args.seed, device=str(device),
                       lr_scaling=args.lr_scaling)
    load0 = load_average()
    with tempfile.TemporaryDirectory() as run:
        t0 = time.perf_counter()
        data = load_dataset(args.dataset)
        if args.subset:  # a reduced run: a seeded random subset of the 70,000 images
            keep = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(0))
            data.images, data.labels = data.images[keep[:args.subset]], data.labels[
                keep[:args.subset]]
        vc = VarClust(config=config).fit(data.images, out_dir=run, progress=args.progress)
        synchronize(device)
        phase_a = time.perf_counter() - t0
        labels = data.labels.numpy()
        init_scores = clustering_scores(labels, vc.predict(data.images).labels)
        vc = VarClust(config=config.replace(epochs=args.epochs))
        vc.fit(data.images, labels, out_dir=run, resume=True, progress=args.progress)
    history = vc.history
    clock, reached = phase_a, phase_a if init_scores["acc"] >= args.target else None
    rows = [["init", f"{phase_a:.1f}", f"{init_scores['acc']:.4f}", "-"]]
    for rec in history:
        clock += rec["seconds"]
        if reached is None and rec["acc"] >= args.target:
            reached = clock
        rows.append([rec["epoch"], f"{clock:.1f}", f"{rec['acc']:.4f}", f"{rec['seconds']:.1f}"])
    print_table(f"{args.dataset}{f' (subset {args.subset})' if args.subset else ''} time to ACC "
                f"{args.target}: {device}, batch {args.batch}, "
                f"pretrain {args.pretrain_epochs} epochs (load {load0})",
                ["epoch", "seconds since start", "ACC", "epoch seconds"], rows)
    outcome = f"{reached:.1f} s" if reached is not None else f"not reached in {args.epochs} epochs"
    print(f"time to ACC >= {args.target}: {outcome}")
    payload = {"section": "time-to-acc", "dataset": args.dataset, "target_acc": args.target,
               "config": config.to_dict(),
               "svi_epochs": args.epochs, "subset": args.subset, "phase_a_seconds": phase_a,
               "init_scores": init_scores,
               "history": history, "time_to_target_s": reached,
               "svi_epoch_seconds_median": statistics.median([r["seconds"] for r in history])
               if history else None,
               "load_average_before": load0, "load_average_after": load_average()}
    print(f"wrote {write_json('time_to_acc', device, payload)}")
    return payload


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=("overhead", "growth", "time-to-acc", "all"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (median)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--jit", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                        help="also time torch.compile of the hand-written step")
    parser.add_argument("--guides", nargs="+", default=["marginal", "mixture"])
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 10, 50, 200])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024, 4096])
    parser.add_argument("--epochs", type=int, default=10, help="time-to-acc: SVI epochs")
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--lr-scaling", default="none", choices=("none", "sqrt", "linear"))
    parser.add_argument("--target", type=float, default=0.55)
    parser.add_argument("--dataset", default="fashion-mnist", help="time-to-acc: the data set")
    parser.add_argument("--subset", type=int, help="time-to-acc on this many images (reduced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if configure_fast_math(device):
        print("TF32 matrix products on (Ampere or newer GPU)")
    sections = {"overhead": overhead, "growth": growth, "time-to-acc": time_to_acc}
    for name, run in sections.items():
        if args.section in (name, "all"):
            run(args, device)


if __name__ == "__main__":
    main()
