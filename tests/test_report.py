"""`varclust report RUN` writes PNGs, NetCDF and a page whose images all load in a browser."""

import re
import shutil
import subprocess
from pathlib import Path

import arviz as az
import numpy as np
import pytest
import torch
from PIL import Image

from varclust import VarClust
from varclust.cli import main

torch.set_num_threads(1)

TINY_FIT = ["--epochs", "1", "--pretrain-epochs", "2", "--hidden", "16", "--latent-dim", "2",
            "--batch-size", "256", "--device", "cpu", "--quiet"]
FIGURES = {"samples.png", "training.png", "latent_map.png", "confusion.png", "entropy.png",
           "compare.png"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Two tiny digits runs (K=5 and K=3) and the report of the first, compared with both."""
    root = tmp_path_factory.mktemp("runs")
    for name, k in (("k5", "5"), ("k3", "3")):
        assert main(["fit", "--dataset", "digits", "--clusters", k, "--out", str(root / name),
                     *TINY_FIT]) == 0
    assert main(["report", str(root / "k5"), "--compare", str(root / "k3"), "--num-data", "150",
                 "--num-samples", "6", "--importance-samples", "2"]) == 0
    return root / "k5" / "report"


def test_report_writes_every_figure_the_page_and_the_inference_data(report):
    page = (report / "index.html").read_text()
    sources = set(re.findall(r'<img src="([^"]+)"', page))
    assert sources == FIGURES
    for name in sources:
        with Image.open(report / name) as image:
            assert image.format == "PNG" and min(image.size) > 100
    assert "digits" in page and "acc" in page
    idata = az.from_netcdf(str(report / "inference_data.nc"))
    assert idata.log_likelihood["x"].shape == (1, 6, 150)
    assert idata.observed_data["x"].dims == ("datum", "channel", "height", "width")


def test_report_ranks_the_runs_on_heldout_data_from_the_command_line(report, tmp_path):
    """`report --compare RUN --heldout NPY`: the comparison is named held-out and counts the
    held-out data, not the drawn ones."""
    root = report.parent.parent
    heldout = tmp_path / "heldout.npy"
    np.save(heldout, np.random.default_rng(1).random((40, 1, 8, 8), dtype=np.float32))
    out = tmp_path / "report"
    assert main(["report", str(root / "k5"), "--compare", str(root / "k3"), "--heldout",
                 str(heldout), "--num-data", "60", "--num-samples", "6",
                 "--importance-samples", "2", "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert "log-likelihood of 40 held-out data" in page
    assert "None of the runs was trained on these data" in page


def test_report_heldout_needs_compare_and_a_npy_file(report, tmp_path, capsys):
    run = report.parent
    assert main(["report", str(run), "--heldout", str(tmp_path / "x.npy")]) == 2
    assert "--heldout ranks the runs of --compare" in capsys.readouterr().err
    assert main(["report", str(run), "--compare", str(run), "--heldout",
                 str(tmp_path / "missing.npy")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_report_refuses_a_run_without_its_data_set(tmp_path, capsys):
    x = np.random.default_rng(0).random((20, 4), dtype=np.float32)
    VarClust(2, hidden=(4,), epochs=1, pretrain_epochs=0, device="cpu").fit(
        x, out_dir=tmp_path, progress=False)
    assert main(["report", str(tmp_path)]) == 2
    assert "does not record its data set" in capsys.readouterr().err


CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const loaded = images.filter((i) => i.complete && i.naturalWidth > 0);
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-loaded", String(loaded.length));
});
</script>"""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Debian chromium is not installed "
                    "(scripts/bootstrap.sh installs it when run as root)")
def test_every_image_of_the_page_loads_in_headless_chromium(report, tmp_path):
    """A copy of the page beside the original, with a script that counts loaded images into
    the DOM, which ``--dump-dom`` prints after the load event."""
    checked = report / "_check.html"
    checked.write_text((report / "index.html").read_text().replace("</body>",
                                                                   CHECK_SCRIPT + "</body>"))
    command = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000", "--dump-dom", Path(checked).as_uri(),
    ]
    try:
        dom = subprocess.run(command, capture_output=True, text=True, timeout=120,
                             check=True).stdout
    finally:
        checked.unlink()
    images = re.search(r'data-images="(\d+)"', dom)
    loaded = re.search(r'data-loaded="(\d+)"', dom)
    assert images and loaded, f"the check script did not run; chromium printed:\n{dom[:2000]}"
    assert int(images.group(1)) == len(FIGURES)
    assert int(loaded.group(1)) == len(FIGURES)


def test_write_report_leaves_the_global_rng_as_it_was(report, tmp_path):
    """The report seeds its own draws (cluster samples) and gives the caller's stream back."""
    from varclust.analysis.report import write_report

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    write_report(report.parent, tmp_path / "again", num_data=100, num_samples=2,
                 importance_samples=2)
    torch.testing.assert_close(torch.rand(3), expected)
