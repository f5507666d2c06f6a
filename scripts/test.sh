#!/usr/bin/env bash
# Install with the test extras, then run the whole test suite (slow end-to-end tests included).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`; pytest-xdist workers, as many as
# vae_pipeline_tests/scheduling.py decides (one per core, one more for the whole suite; grouped there),
# `-n 0` runs in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "[dev]"
# Tests never download: real MNIST comes from a local folder (CI: ../shared/mnist/raw).
export VAE_PIPELINE_MNIST_DIR="${VAE_PIPELINE_MNIST_DIR:-$PWD/../shared/mnist/raw}"
exec .venv/bin/python -m pytest -n auto "$@"
