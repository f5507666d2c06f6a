"""A run whose worker is killed (kill -9) is marked failed by run monitoring, and its MLflow run ended.

Before: the run stayed STARTED in Dagster forever and its MLflow run RUNNING. `dagster dev` runs
with the instance config the scripts create (deploy/local/dagster.yaml): the monitored launcher,
run monitoring on, and the sensor that ends a failed run's MLflow runs.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from typing import Any

import pytest

from vae_pipeline_tests.e2e.conftest import DagsterDev, mlflow_client, wait_for

pytestmark = pytest.mark.slow

# Long enough on the 1,000-image slice (about a minute) to be killed while training.
LONG_TRAINING = {"hidden_dims": [256], "latent_dim": 8, "epochs": 400, "batch_size": 50, "device": "cpu", "seed": 77}


def _worker_pid(dev: DagsterDev, run_id: str) -> int | None:
    for event in dev.run_events(run_id):
        found = re.match(r"Started process for run \(pid: (\d+)\)", event.get("message") or "")
        if found:
            return int(found.group(1))
    return None


def _step_started(dev: DagsterDev, run_id: str, step: str) -> bool:
    return any(e["__typename"] == "ExecutionStepStartEvent" and e.get("stepKey") == step for e in dev.run_events(run_id))


def test_a_killed_run_worker_fails_the_run_and_ends_its_mlflow_run(
    dagster_dev: DagsterDev, tiny_config: Callable[..., dict[str, Any]]
) -> None:
    config = tiny_config()
    config["ops"]["vae_model"]["config"].update(LONG_TRAINING)
    run_id = dagster_dev.launch(config)
    wait_for("vae_model to start training", lambda: _step_started(dagster_dev, run_id, "vae_model"), 240, 1.0)
    pid = _worker_pid(dagster_dev, run_id)
    assert pid is not None
    client = mlflow_client(dagster_dev.tracking_uri)

    def mlflow_run() -> Any:
        runs = client.search_runs(
            [e.experiment_id for e in client.search_experiments()], filter_string=f"tags.`dagster.run_id` = '{run_id}'"
        )
        return runs[0] if runs else None

    assert wait_for("the MLflow run of the training", mlflow_run, 120, 1.0).info.status == "RUNNING"
    os.kill(pid, signal.SIGKILL)

    # Run monitoring (5 s poll, the monitored launcher's health check) or dagster dev's code server,
    # whichever notices the dead worker first, marks the run failed; both are Dagster's own paths.
    status = dagster_dev.wait(run_id, timeout_s=120)
    assert status == "FAILURE"
    assert [e for e in dagster_dev.run_events(run_id) if e["__typename"] == "RunFailureEvent"]
    ended = wait_for("the MLflow run to be ended", lambda: (r := mlflow_run()).info.status != "RUNNING" and r, 120, 2.0)
    assert ended.info.status == "KILLED"
