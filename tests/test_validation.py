"""Bad input gets a clear error that names the problem, before any training."""

import numpy as np
import pytest
import torch

from varclust import FitConfig, VarClust, load_dataset
from varclust.data import as_image_tensor, check_num_clusters

SMALL = dict(latent_dim=2, hidden=(8,), epochs=1, pretrain_epochs=0, batch_size=8, device="cpu")


def small(k: int = 2, **settings) -> VarClust:
    return VarClust(k, **{**SMALL, **settings})


def images(n: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 4, 4)).astype(np.float32)


# ---------------------------------------------------------------------------- as_image_tensor
def test_as_image_tensor_shapes_and_dtype():
    x = as_image_tensor(np.zeros((5, 6, 7)))
    assert x.shape == (5, 1, 6, 7) and x.dtype == torch.float32
    assert as_image_tensor(np.zeros((5, 3), dtype=np.float64)).shape == (5, 3)
    assert as_image_tensor(torch.zeros(5, 3, 8, 8, dtype=torch.float16)).dtype == torch.float32


def test_nan_pixels_are_refused():
    x = images()
    x[3, 1, 1] = np.nan
    x[7, 0, 0] = np.inf
    with pytest.raises(ValueError, match="2 NaN or infinite values in 2 data points"):
        as_image_tensor(x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        small().fit(x, progress=False)


def test_float64_beyond_float32_range_is_refused():
    x = images().astype(np.float64)
    x[0, 0, 0] = 1e300  # finite in float64, infinite once cast to float32
    with pytest.raises(ValueError, match="infinite"):
        as_image_tensor(x)
    with pytest.raises(ValueError, match="infinite"):
        small(likelihood="gaussian").fit(x, progress=False)


def test_values_outside_unit_interval_refused_for_bernoulli():
    x = images() * 3 - 1  # in [-1, 2]
    with pytest.raises(ValueError, match=r"BernoulliLikelihood needs data in \[0.0, 1.0\]"):
        small().fit(x, progress=False)
    with pytest.raises(ValueError, match="divide 8-bit images by 255"):
        small().fit(images() * 255, progress=False)


def test_values_outside_unit_interval_accepted_for_gaussian():
    x = images() * 3 - 1
    vc = small(likelihood="gaussian").fit(x, progress=False)
    assert len(vc.history) == 1 and np.isfinite(vc.history[0]["elbo"])
    assert vc.predict(x).labels.shape == (10,)


def test_uint8_suggests_dividing_by_255():
    x = (images() * 255).astype(np.uint8)
    with pytest.raises(TypeError, match="got dtype torch.uint8 .8-bit images: divide by 255"):
        as_image_tensor(x)
    with pytest.raises(TypeError, match="divide by 255"):
        small().fit(x, progress=False)
    with pytest.raises(TypeError, match="must hold floats in \\[0, 1\\], got dtype torch.int64$"):
        as_image_tensor(np.zeros((4, 3), dtype=np.int64))


def test_object_and_non_array_input_refused():
    with pytest.raises(TypeError, match="dtype object"):
        as_image_tensor(np.array([[0.1, None]], dtype=object))
    with pytest.raises(TypeError, match="numpy array or torch tensor, got list"):
        as_image_tensor([[0.1, 0.2]])


@pytest.mark.parametrize("shape", [(10,), (2, 2, 2, 2, 2)], ids=["rank1", "rank5"])
def test_wrong_rank_refused(shape):
    x = np.full(shape, 0.5, dtype=np.float32)
    pattern = r"must have shape \(N, D\), \(N, H, W\) or \(N, C, H, W\), got " + (
        r"\(10,\)" if len(shape) == 1 else r"\(2, 2, 2, 2, 2\)"
    )
    with pytest.raises(ValueError, match=pattern):
        as_image_tensor(x)
    with pytest.raises(ValueError, match=pattern):
        small().fit(x, progress=False)


def test_empty_array_refused():
    with pytest.raises(ValueError, match="X is empty: it holds no data points"):
        small().fit(np.zeros((0, 4, 4), dtype=np.float32), progress=False)
    with pytest.raises(ValueError, match="empty feature axis"):
        as_image_tensor(np.zeros((3, 0), dtype=np.float32))
    with pytest.raises(ValueError, match="images is empty"):
        as_image_tensor(torch.zeros(0, 5), name="images")


# ---------------------------------------------------------------------------- number of clusters
@pytest.mark.parametrize("k", [1, 0, -3])
def test_fewer_than_two_clusters_refused_at_construction(k):
    with pytest.raises(ValueError, match=f"num_clusters must be at least 2 .*, got {k}"):
        VarClust(k)


@pytest.mark.parametrize("k", [2.5, True, "3"])
def test_non_integer_cluster_count_refused(k):
    with pytest.raises(TypeError, match="num_clusters must be an integer"):
        VarClust(k)


def test_more_clusters_than_data_refused_at_fit():
    vc = small(5)  # construction is fine: N is not known yet
    with pytest.raises(ValueError, match=r"num_clusters=5 exceeds the number of data points \(4\)"):
        vc.fit(images(4), progress=False)
    assert vc.model is None  # nothing was built
    check_num_clusters(4, 4)  # K == N is allowed


# ---------------------------------------------------------------------------- settings, names, y
def test_unknown_config_key_refused():
    with pytest.raises(ValueError, match=r"unknown config keys \['not_a_key'\]; valid keys are"):
        VarClust(3, not_a_key=1)
    with pytest.raises(ValueError, match="unknown config keys"):
        FitConfig.from_dict({"num_clusters": 3, "epoch": 5})


@pytest.mark.parametrize(
    "settings, pattern",
    [
        ({"likelihood": "poisson"}, "likelihood must be 'bernoulli' or 'gaussian'"),
        ({"network": "resnet"}, "network must be 'mlp' or 'conv'"),
        ({"latent_dim": 0}, "latent_dim must be at least 1"),
        ({"epochs": -1}, "epochs must be >= 0"),
        ({"lr_decay": 0.0}, r"lr_decay must be in \(0, 1\]"),
        ({"device": "tpu"}, "device must be 'auto', 'cpu' or 'cuda'"),
    ],
)
def test_bad_settings_refused(settings, pattern):
    with pytest.raises(ValueError, match=pattern):
        VarClust(3, **settings)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown dataset 'mnits'; choose one of digits, "):
        load_dataset("mnits", download=False)


@pytest.mark.parametrize("y_len", [9, 11])
def test_labels_of_wrong_length_refused(y_len):
    with pytest.raises(ValueError, match=rf"y must have shape \(10,\), got \({y_len},\)"):
        small().fit(images(), np.zeros(y_len, dtype=int), progress=False)


def test_predict_before_fit_and_wrong_shape_after():
    vc = small()
    with pytest.raises(RuntimeError, match="not fitted yet"):
        vc.predict(images())
    vc.fit(images(), progress=False)
    wrong = r"data shape \(1, 5, 5\) but the model was built for \(1, 4, 4\)"
    with pytest.raises(ValueError, match=wrong):
        vc.predict(np.zeros((3, 5, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="cluster must be in \\[0, 1\\], got 2"):
        vc.sample(2, 4)
    with pytest.raises(ValueError, match="num_samples must be at least 1"):
        vc.sample(0, 0)
