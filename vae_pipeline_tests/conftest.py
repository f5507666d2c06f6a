"""Shared fixtures: where real MNIST is, small slices of it, and the tiny whole graph built once per session."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from vae_pipeline_tests.helpers import REPO_ROOT, materialize_all
from vae_pipeline_tests.idx_files import write_mnist_slice


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


@dataclass(frozen=True)
class BuiltGraph:
    """A data folder (MLflow's embedded store inside) after one whole-graph run of the tiny variant."""

    data_dir: Path
    result: dg.ExecuteInProcessResult  # the run's events: what each asset reported


@pytest.fixture(scope="session")
def tiny_graph(mnist_slice_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> BuiltGraph:
    """The tiny whole graph materialized once per session (seed 0): VAE v1 registered and champion, everything below
    it written. Read it, never write to it: a test that changes state starts from `tiny_graph_copy`."""
    data_dir = tmp_path_factory.mktemp("tiny_graph") / "data"
    result = materialize_all(data_dir, mnist_slice_dir, seed=0)
    assert result.success, [str(e.event_specific_data.error) for e in result.all_events if e.is_step_failure]
    return BuiltGraph(data_dir, result)


@pytest.fixture
def tiny_graph_copy(tiny_graph: BuiltGraph, tmp_path: Path) -> Path:
    """A copy of the tiny graph's data folder for one test to change (its MLflow store follows it)."""
    target = tmp_path / "data"
    shutil.copytree(tiny_graph.data_dir, target)
    return target


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`pytest -n auto` (scripts/test.sh): as many workers as vae_pipeline_tests/scheduling.py decides for this selection."""
    from vae_pipeline_tests.scheduling import worker_count

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # no affinity on macOS
    return worker_count(cores, config.option.markexpr or "")


def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN001, ANN201 - xdist's Producer and scheduler
    """`pytest -n N`: the suite's own grouping (vae_pipeline_tests/scheduling.py) instead of xdist's."""
    from vae_pipeline_tests.scheduling import GroupedScheduling

    return GroupedScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker: its items in the order the scheduler hands them out
        from vae_pipeline_tests.scheduling import in_hand_out_order

        order = in_hand_out_order([item.nodeid for item in items])
        items[:] = [items[i] for i in order]
