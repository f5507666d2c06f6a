"""Shared fixtures: where real MNIST is, and small slices of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vae_pipeline_tests.idx_files import write_mnist_slice

REPO_ROOT = Path(__file__).resolve().parents[1]


def _find_mnist() -> Path | None:
    configured = os.environ.get("VAE_PIPELINE_MNIST_DIR")
    candidates = [Path(configured)] if configured else []
    candidates.append(REPO_ROOT.parent / "shared" / "mnist" / "raw")
    for candidate in candidates:
        if (candidate / "train-images-idx3-ubyte.gz").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with the four official MNIST .gz files (tests never download)."""
    found = _find_mnist()
    if found is None:
        pytest.fail(
            "real MNIST not found: set VAE_PIPELINE_MNIST_DIR to a folder with the four official IDX .gz files "
            "(CI uses ../shared/mnist/raw)."
        )
    return found


@pytest.fixture(scope="session")
def mnist_slice_dir(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,200 training and 300 test images of real MNIST as an IDX set (md5 checks must be off)."""
    return write_mnist_slice(mnist_dir, tmp_path_factory.mktemp("mnist_slice"), n_train=1200, n_test=300)
