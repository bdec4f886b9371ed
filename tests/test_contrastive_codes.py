"""benchmarks/contrastive_codes.py: SimCLR's loss against a hand computation, and the views."""

import importlib.util
import math
from pathlib import Path

import torch

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "contrastive_codes.py"


def _script(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # as `python benchmarks/...` runs it
    spec = importlib.util.spec_from_file_location("contrastive_codes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nt_xent_equals_a_hand_computation(monkeypatch):
    script = _script(monkeypatch)
    h1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    h2 = torch.tensor([[3.0, 3.0], [-1.0, 0.0]])
    t = 0.5
    z = [torch.tensor(v) / math.hypot(*v) for v in ([1, 0], [0, 1], [1, 1], [-1, 0])]
    partner = {0: 2, 1: 3, 2: 0, 3: 1}
    losses = []
    for i in range(4):
        logits = {j: float(z[i] @ z[j]) / t for j in range(4) if j != i}
        log_norm = math.log(sum(math.exp(v) for v in logits.values()))
        losses.append(log_norm - logits[partner[i]])
    expected = sum(losses) / 4
    assert abs(script.nt_xent(h1, h2, t).item() - expected) < 1e-5


def test_random_views_keep_the_shape_and_differ_per_image(monkeypatch):
    script = _script(monkeypatch)
    torch.manual_seed(0)
    x = torch.rand(1, 1, 28, 28).expand(64, 1, 28, 28).contiguous()
    views = script.random_views(x)
    assert views.shape == x.shape and views.min() >= 0 and views.max() <= 1
    # the same image gets different views: each image draws its own zoom, flip and shift
    assert (views[0] - views[1]).abs().max() > 0.1
