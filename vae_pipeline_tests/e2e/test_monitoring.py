"""A run whose worker is killed (kill -9) is marked failed by run monitoring, retried, and resumed.

Before: the run stayed STARTED in Dagster forever and its MLflow run RUNNING. `dagster dev` runs
with the instance config the scripts create (deploy/local/dagster.yaml): the monitored launcher,
run monitoring on, run retries for dead workers, the `gpu` pool limited to one step, and the
sensor that ends a failed run's MLflow runs.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from typing import Any

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from vae_pipeline.core.model.checkpoint import load_checkpoint
from vae_pipeline_tests.e2e.servers import TERMINAL, DagsterDev, manifest, wait_for
from vae_pipeline_tests.helpers import mlflow_client

pytestmark = pytest.mark.slow

# Long enough on the 1,000-image slice (about a minute) to be killed while training; latent size 8
# (the variant z8-b1-bern).
LONG_TRAINING = {"hidden_dims": [256], "epochs": 400, "batch_size": 50, "device": "cpu", "seed": 77}
LONG_VARIANT = "z8-b1-bern"
# Another seed (another checkpoint folder); killed within a second of its first epoch (about 0.4 s
# each), so 25 epochs leave plenty to resume, and the retry finishes in seconds.
RETRIED_TRAINING = {**LONG_TRAINING, "epochs": 25, "seed": 78}
TRAINING_ONLY = ["mnist_raw", "mnist_tensors", "vae_model"]  # no promotion gate that a good model could still fail

RUN_TAGS = """query($id: ID!) { runOrError(runId: $id) { ... on Run { tags { key value } } } }"""
RUNS_WITH_TAG = """query($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}) { ... on Runs { results { runId } } } }"""


def _worker_pid(dev: DagsterDev, run_id: str) -> int | None:
    for event in dev.run_events(run_id):
        found = re.match(r"Started process for run \(pid: (\d+)\)", event.get("message") or "")
        if found:
            return int(found.group(1))
    return None


def _step_started(dev: DagsterDev, run_id: str, step: str) -> bool:
    return any(e["__typename"] == "ExecutionStepStartEvent" and e.get("stepKey") == step for e in dev.run_events(run_id))


def _tags(dev: DagsterDev, run_id: str) -> dict[str, str]:
    return {t["key"]: t["value"] for t in dev.graphql(RUN_TAGS, {"id": run_id})["runOrError"]["tags"]}


def _retries_of(dev: DagsterDev, run_id: str) -> list[str]:
    """The runs launched as re-executions of `run_id` (by the daemon or by hand)."""
    found = dev.graphql(RUNS_WITH_TAG, {"tags": [{"key": "dagster/parent_run_id", "value": run_id}]})
    return [r["runId"] for r in found["runsOrError"]["results"]]


def _mlflow_run(client: MlflowClient, dagster_run_id: str) -> Run | None:
    """The MLflow run that the Dagster run's training tagged with its id, if any yet."""
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], filter_string=f"tags.`dagster.run_id` = '{dagster_run_id}'"
    )
    return runs[0] if runs else None


def _kill_worker(dev: DagsterDev, run_id: str) -> None:
    pid = _worker_pid(dev, run_id)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)


def test_a_killed_run_worker_fails_the_run_and_ends_its_mlflow_run(
    dagster_dev: DagsterDev, tiny_config: Callable[..., dict[str, Any]]
) -> None:
    config = tiny_config()
    config["ops"]["vae_model"]["config"].update(LONG_TRAINING)
    dagster_dev.add_variants(LONG_VARIANT)
    # Opted out of run retries: a retry would take the MLflow run over again (see the next test).
    run_id = dagster_dev.launch(config, tags={"dagster/max_retries": "0"}, variant=LONG_VARIANT)
    wait_for("vae_model to start training", lambda: _step_started(dagster_dev, run_id, "vae_model"), 240, 1.0)
    client = mlflow_client(dagster_dev.tracking_uri)
    assert wait_for("the MLflow run of the training", lambda: _mlflow_run(client, run_id), 120, 1.0).info.status == "RUNNING"
    _kill_worker(dagster_dev, run_id)

    # Run monitoring (5 s poll, the monitored launcher's health check) or dagster dev's code server,
    # whichever notices the dead worker first, marks the run failed; both are Dagster's own paths.
    status = dagster_dev.wait(run_id, timeout_s=120)
    assert status == "FAILURE"
    assert [e for e in dagster_dev.run_events(run_id) if e["__typename"] == "RunFailureEvent"]
    ended = wait_for("the MLflow run to be ended", lambda: (r := _mlflow_run(client, run_id)).info.status != "RUNNING" and r, 120, 2.0)
    assert ended.info.status == "KILLED"
    assert _tags(dagster_dev, run_id).get("dagster/will_retry") == "false"
    assert _retries_of(dagster_dev, run_id) == []


def test_a_run_whose_worker_died_is_retried_and_resumes_training_from_its_checkpoint(
    dagster_dev: DagsterDev, tiny_config: Callable[..., dict[str, Any]]
) -> None:
    ops = tiny_config()["ops"]
    ops["vae_model"]["config"].update(RETRIED_TRAINING)
    dagster_dev.add_variants(LONG_VARIANT)
    run_id = dagster_dev.launch({"ops": {asset: ops[asset] for asset in TRAINING_ONLY}}, assets=TRAINING_ONLY, variant=LONG_VARIANT)
    wait_for("vae_model to start training", lambda: _step_started(dagster_dev, run_id, "vae_model"), 240, 1.0)
    client = mlflow_client(dagster_dev.tracking_uri)
    started = wait_for("the MLflow run of the training", lambda: _mlflow_run(client, run_id), 120, 1.0)
    checkpoint = dagster_dev.data_dir / "models" / "vae" / started.data.tags["fingerprint"] / "checkpoint.pt"

    # Killed once at least one epoch is checkpointed (within 0.2 s of it, long before the last epoch).
    def checkpointed_epoch() -> int | None:
        if checkpoint.is_file():
            return load_checkpoint(checkpoint)["epoch"]
        if dagster_dev.client().get_run_status(run_id).value in TERMINAL:
            pytest.fail(f"run {run_id} ended before its worker was killed")
        return None

    killed_at = wait_for("the first epoch's checkpoint", checkpointed_epoch, 240, 0.2)
    _kill_worker(dagster_dev, run_id)
    epochs = RETRIED_TRAINING["epochs"]
    assert killed_at < epochs
    assert dagster_dev.wait(run_id, timeout_s=120) == "FAILURE"

    # The daemon re-executes it from the failure: once the dead worker's gpu slot is freed (10 s
    # after the failure), the retry's vae_model resumes from the checkpoint in the same MLflow run.
    (retry,) = wait_for("the automatic retry", lambda: _retries_of(dagster_dev, run_id), 180, 2.0)
    tags = _tags(dagster_dev, retry)
    assert (tags["dagster/parent_run_id"], tags["dagster/root_run_id"], tags["dagster/retry_number"]) == (run_id, run_id, "1")
    assert tags["dagster/partition"] == LONG_VARIANT  # the retry trains the same variant
    # The daemon creates the retry before it tags the failed run with it: wait for the tag, then compare.
    retry_tag = wait_for("the failed run's retry tag", lambda: _tags(dagster_dev, run_id).get("dagster/auto_retry_run_id"), 30, 0.5)
    assert retry_tag == retry
    assert dagster_dev.wait(retry, timeout_s=600) == "SUCCESS"
    assert not _step_started(dagster_dev, retry, "mnist_tensors")  # from the failure: ingest is not redone
    messages = [e.get("message") or "" for e in dagster_dev.run_events(retry)]
    assert f"vae: resuming from {checkpoint} (MLflow run {started.info.run_id})" in messages, messages
    (resumed_after,) = [int(m.rsplit(" ", 1)[1]) for m in messages if m.startswith(f"vae: training {epochs} epochs on cpu, resuming after epoch ")]
    assert resumed_after >= killed_at
    trained = [int(found.group(1)) for m in messages if (found := re.match(rf"vae epoch (\d+)/{epochs} ", m))]
    assert trained == list(range(resumed_after + 1, epochs + 1))  # the epochs before the kill were not trained again
    vae = manifest(dagster_dev.data_dir, "vae_model", retry, LONG_VARIANT)
    assert (vae["mlflow_run_id"], vae["reused"]) == (started.info.run_id, False)
    # One MLflow run holds both: the killed run's epochs (the last one's metrics may have been cut
    # off between its checkpoint and its logging) and the retry's, each epoch once.
    steps = [m.step for m in client.get_metric_history(started.info.run_id, "val_neg_elbo")]
    assert len(steps) == len(set(steps)), sorted(steps)
    assert set(steps) - {resumed_after} == set(range(1, epochs + 1)) - {resumed_after}
    finished = client.get_run(started.info.run_id)
    assert (finished.info.status, finished.data.tags["dagster.run_id"]) == ("FINISHED", retry)
    assert load_checkpoint(checkpoint)["epoch"] == epochs


def test_a_run_whose_asset_raised_is_not_retried(dagster_dev: DagsterDev, tiny_config: Callable[..., dict[str, Any]]) -> None:
    # Larger than the slice's 1,000 training images, within what a full split can leave: only
    # vae_model can tell, in its step. The same config would fail the same way again.
    run_id = dagster_dev.launch(tiny_config(seed=79, batch_size=2000))
    assert dagster_dev.wait(run_id, timeout_s=300) == "FAILURE"
    tags = _tags(dagster_dev, run_id)
    assert (tags["dagster/failure_reason"], tags["dagster/will_retry"]) == ("STEP_FAILURE", "false")
    # The retry daemon (every 5 s) has passed over the failure, saying why, and launched nothing.
    wait_for(
        "the retry daemon's verdict",
        lambda: any("Not retrying run since it failed due to an asset or op failure" in (e.get("message") or "")
                    for e in dagster_dev.run_events(run_id)),
        120, 2.0,
    )
    assert _retries_of(dagster_dev, run_id) == []
