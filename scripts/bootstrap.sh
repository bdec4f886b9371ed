#!/usr/bin/env bash
# Set up varclust on a fresh machine; safe to re-run. Creates .venv in the repository root with
# PyTorch + torchvision (the standard build from the package registry), varclust and its test
# tools, and, when run as root on Debian/Ubuntu, the Fashion-MNIST files (dataset-fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torchvision must come with the torch it was built against: install them together.
if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
fi
.venv/bin/python -m pip install --quiet -e ".[test]"
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
      (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1) || \
      echo "bootstrap: could not install dataset-fashion-mnist; Fashion-MNIST tests will be skipped" >&2
  fi
fi
# headless Chromium opens the `varclust report` page in the tests (skipped without it)
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  if ! command -v chromium >/dev/null 2>&1; then
    apt-get install -y -q chromium >/dev/null 2>&1 || \
      (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1) || \
      echo "bootstrap: could not install chromium; the report's browser test will be skipped" >&2
  fi
fi
