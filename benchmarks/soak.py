"""Soak: train for many thousands of SVI steps and record resident memory (RSS) over time; then
throw bad inputs at the run folder and check that nothing in it changes.

    python benchmarks/soak.py --steps 20000

Phase 1 fits a small model to the UCI digits (1797 images; checkpoints every
``--checkpoint-every`` steps and after every epoch, scores every epoch) while a thread samples the
process's RSS with psutil. Memory "grows" when the median RSS of the last quarter of the run
exceeds that of the first quarter after warm-up by more than ``max(5 MiB, 2 %)``.

Phase 2 tries bad inputs against the finished run folder: bad arrays (hand-picked and
hypothesis-generated), configs that do not match the checkpoint, a full disk while
checkpointing, corrupt and crafted checkpoint files. Each must raise an error and leave the
folder's bytes as they were (the crafted file must not run). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import pickle
import platform
import shutil
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from varclust import VarClust, load_dataset
from varclust.inference import checkpoint as ckpt

SOAK = dict(num_clusters=10, latent_dim=4, hidden=(64,), pretrain_epochs=5, batch_size=64,
            device="cpu")


class RssSampler(threading.Thread):
    """Samples (seconds, RSS MiB, epochs done) every ``interval`` seconds until stopped."""

    def __init__(self, vc: VarClust, interval: float) -> None:
        super().__init__(daemon=True)
        self.vc, self.interval = vc, interval
        self.samples: list[tuple[float, float, int]] = []
        self.done = threading.Event()
        self.process = psutil.Process()

    def run(self) -> None:
        t0 = time.perf_counter()
        while not self.done.is_set():
            rss = self.process.memory_info().rss / 2**20
            self.samples.append((time.perf_counter() - t0, rss, len(self.vc.history)))
            self.done.wait(self.interval)


def soak(images: torch.Tensor, labels: torch.Tensor, out: Path, steps: int, every: int) -> dict:
    steps_per_epoch = -(-len(images) // SOAK["batch_size"])
    epochs = -(-steps // steps_per_epoch)
    vc = VarClust(epochs=epochs, checkpoint_every_steps=every, **SOAK)
    sampler = RssSampler(vc, interval=0.5)
    sampler.start()
    t0 = time.perf_counter()
    vc.fit(images, labels, out_dir=out, progress=False)
    seconds = time.perf_counter() - t0
    sampler.done.set()
    sampler.join()
    samples = sampler.samples
    rss = np.array([s[1] for s in samples])
    epochs_done = np.array([s[2] for s in samples])
    after_warmup = rss[epochs_done >= max(1, epochs // 10)]  # warm-up: the first 10 % of epochs
    quarter = max(1, len(after_warmup) // 4)
    first = float(np.median(after_warmup[:quarter]))
    last = float(np.median(after_warmup[-quarter:]))
    growth = last - first
    return {
        "steps": epochs * steps_per_epoch,
        "epochs": epochs,
        "seconds": seconds,
        "ms_per_step": 1000 * seconds / (epochs * steps_per_epoch),
        "rss_start_mib": float(rss[0]),
        "rss_after_warmup_mib": first,
        "rss_end_mib": last,
        "rss_max_mib": float(rss.max()),
        "growth_after_warmup_mib": growth,
        "grows": bool(growth > max(5.0, 0.02 * first)),
        "skipped_steps": int(sum(h["skipped_steps"] for h in vc.history)),
        "final": {k: vc.history[-1][k] for k in ("elbo", "acc", "nmi", "ari")},
        "samples": [{"seconds": s, "rss_mib": r, "epochs": e} for s, r, e in samples],
    }


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def hostile(out: Path, x: np.ndarray) -> dict:
    """Bad inputs against a finished run folder; returns counts and any that changed it."""
    tried, lost, unexpected = 0, [], []
    before = folder_bytes(out)

    def attempt(name: str, action) -> None:
        nonlocal tried
        tried += 1
        try:
            action()
            unexpected.append(f"{name}: accepted")
        except (ValueError, TypeError, OSError, RuntimeError):
            pass
        if folder_bytes(out) != before:
            lost.append(name)

    def fit(data, **settings):
        kwargs = {k: settings.pop(k) for k in ("y", "resume") if k in settings}
        vc = VarClust(**{**SOAK, "epochs": 10_000, "pretrain_epochs": 0, **settings})
        return lambda: vc.fit(data, out_dir=out, progress=False, **{"resume": True, **kwargs})

    n = len(x)
    cases = {
        "uint8": fit((x * 255).astype(np.uint8)),
        "float64 overflow": fit(np.full_like(x, 1e300, dtype=np.float64)),
        "NaN pixel": fit(np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x)),
        "out of [0, 1]": fit(x * 2),
        "rank 1": fit(x.reshape(-1)),
        "rank 5": fit(x[:, None]),
        "empty": fit(x[:0]),
        "K > N": fit(x[:5]),
        "labels of wrong length": fit(x, y=np.zeros(n - 1)),
        "other latent_dim": fit(x, latent_dim=5),
        "other hidden": fit(x, hidden=(32,)),
        "other image size": fit(x[:, :, :4, :4]),
        "unknown setting": lambda: VarClust(num_clusters=10, epoch=3),
        "K = 1": lambda: VarClust(num_clusters=1),
        "NaN learning rate": lambda: VarClust(num_clusters=3, learning_rate=float("nan")),
    }
    for name, action in cases.items():
        attempt(name, action)

    # a full disk while the resumed fit checkpoints
    real_fsync = ckpt.os.fsync

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    ckpt.os.fsync = no_space
    try:
        attempt("full disk", fit(x, epochs=len(json.loads(before["metrics.json"])["history"]) + 1))
    finally:
        ckpt.os.fsync = real_fsync

    # checkpoint files that must be refused: corrupt, truncated, crafted to run code
    marker = out.parent / "crafted-file-ran"

    class Crafted:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for name, data in {
        "truncated checkpoint": before["checkpoint.pt"][: len(before["checkpoint.pt"]) // 2],
        "random bytes": os.urandom(4096),
        "crafted pickle": pickle.dumps({"format": ckpt.CHECKPOINT_FORMAT, "x": Crafted()}, 2),
    }.items():
        other = out.parent / f"{name.replace(' ', '-')}.pt"
        other.write_bytes(data)
        attempt(name, lambda other=other: VarClust.load(other))
    if marker.exists():
        lost.append("crafted pickle RAN")

    # hypothesis-generated arrays
    arrays = st.sampled_from([np.float16, np.float64, np.int32, np.uint8, np.bool_]).flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=5, max_side=6)))

    @settings(max_examples=200, deadline=None, derandomize=True, database=None)
    @given(data=arrays)
    def fuzz(data):
        attempt("hypothesis array", fit(data))

    fuzz()
    return {"tried": tried, "changed_the_run_folder": lost, "accepted": unexpected}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/soak.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("digits")
    work = Path(tempfile.mkdtemp(prefix="varclust-soak-"))
    try:
        result = soak(data.images, data.labels, work / "run", args.steps, args.checkpoint_every)
        result["hostile"] = hostile(work / "run", data.images.numpy())
    finally:
        shutil.rmtree(work)
    result["settings"] = {**SOAK, "hidden": list(SOAK["hidden"]), "dataset": "digits",
                          "checkpoint_every_steps": args.checkpoint_every, "threads": 1}
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                         "torch": torch.__version__}
    result["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")

    print(f"{'steps':>7} {'epochs':>6} {'s/run':>7} {'ms/step':>7} {'RSS start':>10} "
          f"{'after warm-up':>13} {'end':>7} {'max':>7} {'growth':>7}  grows")
    print(f"{result['steps']:>7} {result['epochs']:>6} {result['seconds']:>7.0f} "
          f"{result['ms_per_step']:>7.2f} {result['rss_start_mib']:>9.1f}M "
          f"{result['rss_after_warmup_mib']:>12.1f}M {result['rss_end_mib']:>6.1f}M "
          f"{result['rss_max_mib']:>6.1f}M {result['growth_after_warmup_mib']:>+6.1f}M  "
          f"{result['grows']}")
    h = result["hostile"]
    print(f"bad inputs tried: {h['tried']}; changed the run folder: {h['changed_the_run_folder']};"
          f" accepted: {h['accepted']}")
    print(f"final epoch: {result['final']}; skipped steps: {result['skipped_steps']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
