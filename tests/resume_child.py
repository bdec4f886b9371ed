"""A small deterministic fit run as a subprocess by test_resume.py.

Usage: python resume_child.py OUT_DIR KILL_AFTER_STEP RESUME
KILL_AFTER_STEP > 0 sends this process SIGKILL right after that many SVI steps.
"""

import os
import signal
import sys

import numpy as np
import torch

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

import varclust  # noqa: E402
from varclust.inference import svi  # noqa: E402

SETTINGS = dict(num_clusters=3, latent_dim=2, hidden=(16,), epochs=3, pretrain_epochs=2,
                batch_size=16, checkpoint_every_steps=3, seed=1, device="cpu")
STEPS_PER_EPOCH = 8  # 120 points in batches of 16


def data() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 1, size=(3, 12))
    x = centres[rng.integers(0, 3, size=120)] + 0.1 * rng.normal(size=(120, 12))
    return np.clip(x, 0, 1).astype(np.float32)


def main() -> None:
    out, kill_after, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    if kill_after:
        original = svi.SVITrainer.step
        done = [0]

        def step(self, *args):
            loss = original(self, *args)
            done[0] += 1
            if done[0] == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return loss

        svi.SVITrainer.step = step
    varclust.VarClust(**SETTINGS).fit(data(), out_dir=out, resume=resume, progress=False)


if __name__ == "__main__":
    main()
