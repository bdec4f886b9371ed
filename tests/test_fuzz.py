"""Fuzzing the entry points with hypothesis (bounded: fixed examples, derandomised, a deadline):
whatever comes in, the answer is a valid result or a TypeError/ValueError with a message."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from varclust import FitConfig, VarClust
from varclust.data.validation import as_image_tensor
from varclust.inference.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)

BOUNDED = settings(max_examples=150, deadline=timedelta(seconds=5), derandomize=True,
                   database=None, suppress_health_check=[HealthCheck.too_slow,
                                                         HealthCheck.function_scoped_fixture])

DTYPES = [np.float16, np.float32, np.float64, np.int64, np.uint8, np.bool_, np.complex64]
arrays = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=5, min_side=0,
                                                     max_side=5))
)
# data in [0, 1] of a valid rank, and the same with a bad value in it
unit_shapes = hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=6)
unit_arrays = hnp.arrays(np.float64, unit_shapes, elements=st.floats(0, 1))
spoiled_arrays = unit_arrays.flatmap(lambda x: st.tuples(
    st.just(x), st.integers(0, x.size - 1), st.sampled_from([np.nan, np.inf, -1.0, 1.5, 1e300])
)).map(lambda t: np.where(np.arange(t[0].size).reshape(t[0].shape) == t[1], t[2], t[0]))


def assert_clear(err: Exception) -> None:
    assert isinstance(err, (TypeError, ValueError)), repr(err)
    assert len(str(err)) > 20, repr(err)


@BOUNDED
@given(x=arrays)
def test_as_image_tensor_accepts_or_explains(x: np.ndarray) -> None:
    try:
        t = as_image_tensor(x)
    except Exception as err:  # noqa: BLE001 - the point is which kinds come out
        assert_clear(err)
        return
    assert t.dtype == torch.float32 and t.dim() in (2, 4)
    assert t.shape[0] == x.shape[0] > 0 and t.numel() == x.size
    assert bool(torch.isfinite(t).all())
    np.testing.assert_array_equal(t.numpy().reshape(x.shape), x.astype(np.float32))


@BOUNDED
@given(x=st.one_of(arrays, unit_arrays, spoiled_arrays), k=st.integers(2, 4))
def test_fit_accepts_or_explains(x: np.ndarray, k: int) -> None:
    vc = VarClust(num_clusters=k, latent_dim=2, hidden=(4,), epochs=1, pretrain_epochs=0,
                  batch_size=8, device="cpu")
    try:
        vc.fit(x, progress=False)
    except Exception as err:  # noqa: BLE001
        assert_clear(err)
        return
    assert x.ndim in (2, 3, 4) and len(x) >= k and np.isfinite(x).all()
    assert 0 <= x.min() and x.max() <= 1
    assert np.isfinite(vc.history[-1]["elbo"])
    assert vc.predict(x).labels.shape == (len(x),)


FIELD_NAMES = list(FitConfig.__dataclass_fields__)
values = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 3000), st.floats(allow_nan=True),
    st.text(max_size=8), st.sampled_from(["mlp", "conv", "gaussian", "cpu", "cuda:1", "auto"]),
    st.lists(st.integers(-2, 600), max_size=4),
)
configs = st.dictionaries(
    st.one_of(st.sampled_from(FIELD_NAMES), st.text(min_size=1, max_size=6)), values, max_size=6
)


@BOUNDED
@given(d=configs)
def test_config_from_dict_accepts_or_explains(d: dict[str, Any]) -> None:
    try:
        config = FitConfig.from_dict(d)
    except Exception as err:  # noqa: BLE001
        assert_clear(err)
        unknown = set(d) - set(FIELD_NAMES)
        if unknown:
            assert "unknown config keys" in str(err)
        return
    assert set(d) <= set(FIELD_NAMES)
    round_trip = FitConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert round_trip == config


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.arange(6.0)}, "history": [{"elbo": -1.0}]})
    return path.read_bytes()


@settings(BOUNDED, max_examples=100)
@given(cuts=st.lists(st.tuples(st.integers(0, 10**6), st.binary(max_size=8)), max_size=4),
       keep=st.integers(0, 10**6))
def test_damaged_checkpoint_bytes_are_refused_or_read(
    checkpoint_bytes: bytes, tmp_path_factory, cuts, keep
) -> None:
    data = bytearray(checkpoint_bytes[: keep % (len(checkpoint_bytes) + 1)])
    for at, junk in cuts:
        at = at % (len(data) + 1)
        data[at: at + len(junk)] = junk
    path = tmp_path_factory.mktemp("damaged") / "checkpoint.pt"
    path.write_bytes(bytes(data))
    try:
        state = load_checkpoint(path)
    except CheckpointError as err:
        assert str(path) in str(err)
        return
    assert isinstance(state, dict) and state["format"] == CHECKPOINT_FORMAT
