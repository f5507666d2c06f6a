"""A run whose process died is marked failed: at the next run's start, or by `runs_cli fail-dead-runs`.

Before: a `dg launch` killed with -9 left its run STARTED and its MLflow run RUNNING for good (no
daemon watches it, and the run recorded no worker that the daemon could look at).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from vae_pipeline import runs_cli
from vae_pipeline.defs.validation import checked
from vae_pipeline.run_launcher import RunWorker, record_run_worker, recorded_worker, this_host
from vae_pipeline_tests.helpers import REPO_ROOT, TINY_TRAINING, mlflow_client, tracking_uri
from vae_pipeline_tests.variants import TINY_VARIANT, add_variants

DG = Path(sys.executable).parent / "dg"


@dg.op
def nothing() -> None:
    """No work: the run only has to start."""


@dg.job(executor_def=checked(dg.in_process_executor))
def next_run() -> None:
    """A run of the code location's executor: it starts as every run of the pipeline does."""
    nothing()


def _reaped_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _started_run(instance: dg.DagsterInstance, worker: RunWorker | None) -> str:
    """A STARTED run of `instance` whose worker is `worker` (None: none recorded)."""
    run = instance.add_run(dg.DagsterRun(job_name="vae_pipeline_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED))
    if worker is not None:
        record_run_worker(instance, run, worker)
    return run.run_id


def _failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    (failure,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return failure.dagster_event.message


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$DAGSTER_HOME in tmp_path, and the code location's data folder beside it, without an MLflow store yet."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    # One sqlite file for every run's events: a file per run (the default) costs a second per run created.
    (home / "dagster.yaml").write_text(
        "event_log_storage:\n  module: dagster.core.storage.event_log\n  class: ConsolidatedSqliteEventLogStorage\n"
        f"  config: {{base_dir: {home / 'events'}}}\ntelemetry: {{enabled: false}}\n"
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("VAE_PIPELINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return home


def test_the_next_run_fails_a_dead_run_of_this_host_and_no_other(home: Path) -> None:
    with dg.DagsterInstance.get() as instance:
        dead_pid = _reaped_pid()
        dead = _started_run(instance, RunWorker(dead_pid, this_host(), time.time()))
        alive = _started_run(instance, RunWorker.this_process())
        elsewhere = _started_run(instance, RunWorker(dead_pid, "another-machine", time.time()))
        unrecorded = _started_run(instance, None)

        result = dg.execute_job(dg.reconstructable(next_run), instance)

        assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
        message = _failure_message(instance, dead)
        assert f"Run worker process {dead_pid} is gone" in message and f"the start of run {result.run_id}" in message
        assert instance.get_run_by_id(dead).tags["dagster/failure_reason"] == "UNEXPECTED_TERMINATION"
        for run_id in (alive, elsewhere, unrecorded):
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
        # The next run recorded its own process, so that a later check can judge it in turn.
        assert recorded_worker(instance, result.run_id) == RunWorker.this_process()


def test_fail_dead_runs_marks_a_dead_run_failed_and_says_so(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with dg.DagsterInstance.get() as instance:
        dead_pid = _reaped_pid()
        dead = _started_run(instance, RunWorker(dead_pid, this_host(), time.time()))
        alive = _started_run(instance, RunWorker.this_process())

    assert runs_cli.main(["fail-dead-runs"]) == 0
    printed = capsys.readouterr().out
    assert f"run {dead}: run worker process {dead_pid} is gone (killed or crashed); marked FAILURE" in printed
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
        assert "`python -m vae_pipeline.runs_cli fail-dead-runs`" in _failure_message(instance, dead)
        assert instance.get_run_by_id(alive).status == dg.DagsterRunStatus.STARTED

    assert runs_cli.main(["fail-dead-runs"]) == 0  # nothing left to do
    assert "no dead runs" in capsys.readouterr().out


@pytest.mark.slow
def test_a_killed_dg_launch_is_failed_with_its_mlflow_run(
    tmp_path: Path, mnist_slice_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    shutil.copy(REPO_ROOT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")  # as scripts/instance.sh does
    with dg.DagsterInstance.from_config(str(home)) as instance:
        add_variants(instance, TINY_VARIANT)
    venv = Path(sys.prefix)
    env = {**os.environ, "DAGSTER_HOME": str(home), "VAE_PIPELINE_DATA_DIR": str(data), "VIRTUAL_ENV": str(venv),
           "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(name, None)
    config = {"ops": {
        "mnist_raw": {"config": {"source_dir": str(mnist_slice_dir), "verify_md5": False, "allow_download": False}},
        "mnist_tensors": {"config": {"val_size": 200}},
        # A minute or more of training (small batches, many epochs): killed in its first epochs.
        "vae_model": {"config": {**TINY_TRAINING, "epochs": 500, "batch_size": 10}},
    }}
    argv = [str(DG), "launch", "--assets", "mnist_raw,mnist_tensors,vae_model", "--partition", TINY_VARIANT,
            "--config-json", json.dumps(config)]
    with open(tmp_path / "dg.log", "wb") as log:
        launch = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            deadline = time.monotonic() + 300
            while not (run_id := _training_run(instance)):
                assert launch.poll() is None, f"dg launch exited ({launch.returncode}):\n{(tmp_path / 'dg.log').read_text()}"
                assert time.monotonic() < deadline, "no epoch trained within 300 s"
                time.sleep(0.5)
            assert recorded_worker(instance, run_id).pid == launch.pid  # the dg process recorded itself
    finally:
        launch.send_signal(signal.SIGKILL)
        launch.wait()
    client = mlflow_client(tracking_uri(data))
    (tracked,) = client.search_runs([client.get_experiment_by_name("vae-pipeline").experiment_id],
                                    filter_string=f"tags.`dagster.run_id` = '{run_id}'")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED  # what nothing used to change
    assert tracked.info.status == "RUNNING"

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("VAE_PIPELINE_DATA_DIR", str(data))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    assert runs_cli.main(["fail-dead-runs"]) == 0
    printed = capsys.readouterr().out
    assert f"run {run_id}: run worker process {launch.pid} is gone" in printed, printed
    assert f"MLflow runs {tracked.info.run_id} marked FAILED" in printed, printed
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        message = _failure_message(instance, run_id)
    assert f"Run worker process {launch.pid} is gone" in message and tracked.info.run_id in message
    assert client.get_run(tracked.info.run_id).info.status == "FAILED"


def _training_run(instance: dg.DagsterInstance) -> str | None:
    """The id of the instance's run once it has trained an epoch (its MLflow run is then RUNNING), else None."""
    runs = instance.get_runs()
    if not runs:
        return None
    (run,) = runs
    trained = any((e.dagster_event is None and e.user_message.startswith("vae epoch 1/"))
                  for e in instance.all_logs(run.run_id))
    return run.run_id if trained else None
