"""A small deterministic fit run as a subprocess by test_pretrain_resume.py.

Usage: python pretrain_resume_child.py OUT_DIR KILL_AFTER_STEP RESUME
KILL_AFTER_STEP > 0 sends this process SIGKILL right after that many pretraining steps.
"""

import os
import signal
import sys

import torch

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

import resume_child  # noqa: E402

import varclust  # noqa: E402
from varclust.inference import pretrain  # noqa: E402

#: 4 pretraining epochs of 8 batches, checkpointed every 3 batches; then 2 SVI epochs
SETTINGS = {**resume_child.SETTINGS, "pretrain_epochs": 4, "epochs": 2}


def main() -> None:
    out, kill_after, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    if kill_after:
        original = pretrain.Pretrainer.train_step
        done = [0]

        def train_step(self, x):
            original(self, x)
            done[0] += 1
            if done[0] == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

        pretrain.Pretrainer.train_step = train_step
    varclust.VarClust(**SETTINGS).fit(resume_child.data(), out_dir=out, resume=resume,
                                      progress=False)


if __name__ == "__main__":
    main()
