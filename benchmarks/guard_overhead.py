"""The cost of the non-finite guard in SVITrainer.step.

    python benchmarks/guard_overhead.py --rounds 5 --steps 20 --hidden 500,500,2000

Two measurements: the guard's own work (``isfinite`` on the loss and the gradient norm, ``&``,
and the ``bool`` that syncs with the host) timed alone over many calls; and the guarded step
against the same step without the guard, interleaved in rounds, medians reported (on a shared,
loaded machine the second is noisy: compare it with the spread of the rounds). The model is an
MLP of ``--hidden`` widths (D=10, K=10) on random 784-pixel data in batches of ``--batch``.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import timeit
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from varclust import VarClust
from varclust.inference.svi import SVITrainer


def unguarded_step(trainer: SVITrainer, x, idx, num_data):
    """SVITrainer.step as it was before the guard."""
    trainer.optimizer.zero_grad(set_to_none=True)
    loss = trainer.elbo(x, idx, num_data)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainer.elbo.parameters(), trainer.clip_norm)
    trainer.optimizer.step()
    return loss.detach()


def time_steps(step, trainer, x, batch, steps, device) -> float:
    """Seconds per step over ``steps`` steps (synchronised at the ends only)."""
    num_data = len(x)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randperm(num_data, generator=g)[:batch].to(device) for _ in range(steps)]
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for idx in batches:
        step(trainer, x[idx], idx, num_data)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", default="500,500,2000")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path,
                        default=Path("benchmarks/results/guard_overhead.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    vc = VarClust(num_clusters=10, hidden=hidden, device=args.device)
    vc.build((784,))
    device = vc.device
    x = torch.rand(4096, 784, generator=torch.Generator().manual_seed(0)).to(device)
    trainer = SVITrainer(vc.model, vc.guide, 2e-3)
    steps = {"guarded": SVITrainer.step, "unguarded": unguarded_step}
    for step in steps.values():  # warm-up
        time_steps(step, trainer, x, args.batch, 3, device)
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(time_steps(step, trainer, x, args.batch, args.steps, device))
    med = {name: float(np.median(t)) * 1000 for name, t in times.items()}
    overhead = med["guarded"] / med["unguarded"] - 1
    loss, norm = torch.tensor(1.0, device=device), torch.tensor(2.0, device=device)
    calls = 20_000
    check_us = 1e6 * min(timeit.repeat(
        lambda: bool(torch.isfinite(loss) & torch.isfinite(norm)), number=calls, repeat=5)) / calls
    print(f"{'step':>10} {'median ms':>10} {'all rounds (ms)':>40}")
    for name, t in times.items():
        print(f"{name:>10} {med[name]:>10.2f}   {', '.join(f'{1000 * v:.1f}' for v in t)}")
    print(f"guarded/unguarded - 1: {100 * overhead:+.1f} % ({device}, hidden {hidden}, batch "
          f"{args.batch}, threads {torch.get_num_threads()})")
    print(f"the guard's own work: {check_us:.1f} us per step "
          f"({100 * check_us / 1000 / med['unguarded']:.3f} % of an unguarded step)")
    result = {
        "guard_check_us": check_us, "hidden": list(hidden),
        "median_ms": med, "rounds_ms": {k: [1000 * v for v in t] for k, t in times.items()},
        "overhead_fraction": overhead, "device": str(device), "batch": args.batch,
        "steps_per_round": args.steps, "threads": torch.get_num_threads(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average": os.getloadavg(), "torch": torch.__version__},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
