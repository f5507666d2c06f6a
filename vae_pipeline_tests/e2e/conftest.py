"""The end-to-end tests' servers as session fixtures: `mlflow server` and `dagster dev` on 127.0.0.1, and one run through them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from vae_pipeline_tests.e2e.servers import (
    ARTIFACTS,
    BIN,
    DagsterDev,
    Server,
    free_port,
    start_mlflow_server,
    start_server,
    wait_for,
    wait_for_location,
)
from vae_pipeline_tests.helpers import REPO_ROOT, run_config
from vae_pipeline_tests.variants import TINY_VARIANT


@pytest.fixture(scope="session")
def e2e_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def mlflow_server(e2e_root: Path) -> Iterator[Server]:
    """`mlflow server` with a sqlite backend and its artifacts under the test's temporary folder."""
    port = free_port()
    root = e2e_root / "mlflow"
    root.mkdir()
    server = start_mlflow_server(root, port, "mlflow-server")
    try:
        wait_for("mlflow server", lambda: requests.get(f"{server.url}/health", timeout=2).ok, 120, log=server.log)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dagster_dev(e2e_root: Path, mlflow_server: Server, mnist_slice_dir: Path) -> Iterator[DagsterDev]:
    """`dagster dev` (webserver, daemon, code server) on this repo's definitions, tracking to the MLflow server."""
    port = free_port()
    home, data_dir = e2e_root / "dagster_home", e2e_root / "data"
    home.mkdir()
    shutil.copy(REPO_ROOT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")  # the instance the scripts create
    env = {
        "DAGSTER_HOME": str(home),
        "VAE_PIPELINE_DATA_DIR": str(data_dir),
        "VAE_PIPELINE_MNIST_DIR": str(mnist_slice_dir),
        "VAE_PIPELINE_RAW_SETTLE_SECONDS": "0",  # the slice was written whole seconds ago: count it at once
        # The tests launch every run themselves, with the tiny config; automation would start more with the
        # default one. Its conditions are tested in-process (defs/test_automation.py).
        "VAE_PIPELINE_AUTOMATION": "off",
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }
    server = start_server(
        "dagster", [str(BIN / "dagster"), "dev", "-w", str(REPO_ROOT / "workspace.yaml"), "-p", str(port)],
        port, ARTIFACTS / "logs" / "dagster-dev.log", env,
    )
    dev = DagsterDev(server, home, data_dir, mlflow_server.url)
    try:
        wait_for("dagster webserver", lambda: requests.get(f"{server.url}/server_info", timeout=2).ok, 180, log=server.log)
        wait_for_location(dev, 180)
        # The variant the tiny config trains, as a user adds it in the UI (the sweep sensor is off here).
        dev.add_variants(TINY_VARIANT)
        yield dev
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tiny_config(mnist_slice_dir: Path) -> Callable[..., dict[str, Any]]:
    """The tiny whole-graph run config (a slice of real MNIST), as a plain dict for GraphQL."""

    def make(seed: int = 0, **training: object) -> dict[str, Any]:
        return run_config(mnist_slice_dir, seed, **training).to_config_dict()

    return make


@pytest.fixture(scope="session")
def first_run(dagster_dev: DagsterDev, tiny_config: Callable[..., dict[str, Any]]) -> str:
    """The whole graph materialized once through GraphQL (seed 0, the tiny variant); the run id."""
    run_id = dagster_dev.launch(tiny_config(seed=0))
    status = dagster_dev.wait(run_id, timeout_s=400)
    assert status == "SUCCESS", [e for e in dagster_dev.run_events(run_id) if "Failure" in e["__typename"]]
    return run_id
