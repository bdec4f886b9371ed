"""precision="bfloat16": the networks compute under bfloat16 autocast and return float32, so the
ELBO, the codes and the clusters stay float32; the parameters and state dicts do not change."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import binary_blobs

from varclust import VarClust
from varclust.cli import build_parser
from varclust.config import PRECISIONS
from varclust.guides.encoders import make_encoder
from varclust.model.decoders import make_decoder
from varclust.model.diffusion import ConditionalUNet
from varclust.model.precision import COMPUTE_DTYPES

TINY = dict(latent_dim=2, hidden=(16,), batch_size=16, device="cpu")


def blobs(n: int = 48) -> np.ndarray:
    """n binary vectors (n, 12) around 3 prototypes."""
    return binary_blobs(n)[0]


def test_every_precision_has_a_compute_dtype():
    assert tuple(COMPUTE_DTYPES) == PRECISIONS


def test_a_bfloat16_fit_has_a_finite_elbo_and_float32_codes_and_clusters():
    x = blobs()
    vc = VarClust(3, precision="bfloat16", epochs=2, pretrain_epochs=2, **TINY)
    vc.fit(x, progress=False)
    assert all(np.isfinite(h["elbo"]) for h in vc.history)
    assert vc.encode(x).dtype == np.float32
    pred = vc.predict(x)
    assert pred.responsibilities.dtype == np.float32 and np.isfinite(pred.responsibilities).all()
    assert pred.labels.shape == (len(x),)


def tensors(out: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """An encoder's (loc, scale) or a decoder's output, as a tuple."""
    return out if isinstance(out, tuple) else (out,)


NETWORKS = {
    "mlp encoder": (lambda dt: make_encoder("mlp", (12,), 2, (16,), dt), (5, 12)),
    "conv encoder": (lambda dt: make_encoder("conv", (1, 28, 28), 2, (), dt), (2, 1, 28, 28)),
    "mlp decoder": (lambda dt: make_decoder("mlp", 2, (12,), (16,), dt), (3, 5, 2)),
    "conv decoder": (lambda dt: make_decoder("conv", 2, (1, 28, 28), (), dt), (2, 2)),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_networks_compute_in_bfloat16_and_return_float32(name):
    build, shape = NETWORKS[name]
    torch.manual_seed(0)
    full = build(torch.float32)
    half = build(torch.bfloat16)
    half.load_state_dict(full.state_dict())  # the same keys, either way
    x = torch.rand(shape)
    for a, b in zip(tensors(full(x)), tensors(half(x))):
        assert b.dtype == torch.float32 and b.shape == a.shape
        assert not torch.equal(a, b)  # it did run in bfloat16 ...
        torch.testing.assert_close(b, a, rtol=0.05, atol=0.05)  # ... close to float32


@pytest.mark.parametrize("name", NETWORKS)
def test_a_float64_network_returns_float64(name):
    """A model cast with .double() (e.g. for exact comparisons) keeps float64 outputs."""
    build, shape = NETWORKS[name]
    network = build(torch.float32).double()
    for out in tensors(network(torch.rand(shape, dtype=torch.float64))):
        assert out.dtype == torch.float64


def test_the_unet_computes_in_bfloat16_on_the_cpu_when_asked():
    x, t, z = torch.rand(2, 1, 8, 8), torch.tensor([0, 5]), torch.randn(2, 2)
    torch.manual_seed(0)
    full = ConditionalUNet(1, 2, width=8)
    half = ConditionalUNet(1, 2, width=8, compute_dtype=torch.bfloat16)
    half.load_state_dict(full.state_dict())
    out = half(x, t, z)
    assert out.dtype == torch.float32 and not torch.equal(out, full(x, t, z))
    assert half.compute_dtype_on(torch.device("cuda")) == torch.bfloat16  # as always on CUDA


def test_the_state_dicts_of_both_precisions_are_alike_and_load_into_each_other():
    models = {}
    for precision in PRECISIONS:
        vc = VarClust(3, precision=precision, **TINY)
        vc.build((12,))
        models[precision] = vc
    full, half = models["float32"], models["bfloat16"]
    for part in ("model", "guide"):
        a, b = getattr(full, part).state_dict(), getattr(half, part).state_dict()
        assert list(a) == list(b)
        assert all(b[k].dtype == a[k].dtype for k in a)
        getattr(half, part).load_state_dict(a)


def test_an_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="precision must be 'float32' or 'bfloat16', got 'fp16'"):
        VarClust(3, precision="fp16")
    with pytest.raises(ValueError, match="compute_dtype must be one of"):
        make_encoder("mlp", (12,), 2, (16,), torch.float16)


def test_the_command_line_offers_both_precisions(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--help"])
    assert "--precision {bfloat16,float32}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--out", "x", "--precision", "float16"])
    assert "invalid choice: 'float16'" in capsys.readouterr().err
