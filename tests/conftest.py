"""Shared test settings: small CPU models, one thread (the test machine is shared)."""

import pyro
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    """Every test starts from an empty param store and a known seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture
def cli_config(tmp_path):
    """The FitConfig that ``varclust fit --out TMP FLAGS...`` makes, as ``cli_config(*FLAGS)``:
    the flags parsed and counted as typed, then the presets and the recipe applied."""
    from varclust.cli import build_parser
    from varclust.cli_config import config_from_args

    def config(*flags: str):
        args = build_parser().parse_args(["fit", "--out", str(tmp_path), *flags])
        args.argv = list(flags)
        return config_from_args(args)

    return config
