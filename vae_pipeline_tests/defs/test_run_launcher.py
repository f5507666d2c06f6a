"""The monitored launcher's health check: a dead, zombie or replaced run worker of this host is reported FAILED."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import dagster as dg
import psutil
from dagster._core.events import EngineEventData
from dagster._core.launcher import WorkerStatus

from vae_pipeline.run_launcher import RunWorker, record_run_worker, recorded_worker, this_host, worker_health


def _reaped_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid no longer exists
    return child.pid


def test_a_live_worker_is_running() -> None:
    assert worker_health(RunWorker(os.getpid()), run_started_at=time.time() + 5).status == WorkerStatus.RUNNING


def test_a_live_worker_recorded_with_its_host_and_start_time_is_running() -> None:
    assert worker_health(RunWorker.this_process(), run_started_at=time.time() + 5).status == WorkerStatus.RUNNING


def test_a_worker_that_is_gone_is_failed() -> None:
    pid = _reaped_pid()
    result = worker_health(RunWorker(pid, this_host(), time.time()), run_started_at=None)
    assert result.status == WorkerStatus.FAILED and f"run worker process {pid} is gone" in result.msg


def test_a_killed_worker_left_as_a_zombie_is_failed() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        child.kill()
        time.sleep(0.5)  # not reaped yet: a zombie, as a killed run worker is until its parent waits
        result = worker_health(RunWorker(child.pid), run_started_at=None)
        assert result.status == WorkerStatus.FAILED and "zombie" in result.msg
    finally:
        child.wait()


def test_a_pid_reused_by_a_newer_process_is_failed() -> None:
    # This process was created long after a run that started at the epoch: not that run's worker.
    result = worker_health(RunWorker(os.getpid()), run_started_at=0.0)
    assert result.status == WorkerStatus.FAILED and "newer process" in result.msg


def test_a_pid_held_by_another_process_than_the_recorded_one_is_failed() -> None:
    # The recorded creation time is not this process's: the pid was reused, whenever the run started.
    created = psutil.Process().create_time()
    result = worker_health(RunWorker(os.getpid(), this_host(), created - 60), run_started_at=None)
    assert result.status == WorkerStatus.FAILED and "another process" in result.msg


def test_a_worker_on_another_host_is_not_judged_by_local_pids() -> None:
    pid = _reaped_pid()  # no such process here; on its own host it may well run
    result = worker_health(RunWorker(pid, "another-machine", time.time()), run_started_at=None)
    assert result.status == WorkerStatus.RUNNING and "another-machine" in result.msg and "not checked" in result.msg


def test_no_recorded_pid_is_not_judged_dead() -> None:
    assert worker_health(None, run_started_at=None).status == WorkerStatus.RUNNING


def test_the_recorded_worker_is_the_latest_record_with_its_host_and_start_time() -> None:
    instance = dg.DagsterInstance.ephemeral()
    run = instance.add_run(dg.DagsterRun(job_name="job", run_id="a1b2c3d4-0000-0000-0000-000000000000"))
    assert recorded_worker(instance, run.run_id) is None
    # What Dagster's run worker (`dagster api execute_run`) records: a pid, no host.
    instance.report_engine_event("Started process for run (pid: 123).", run, EngineEventData.in_process(123))
    assert recorded_worker(instance, run.run_id) == RunWorker(123)
    this = RunWorker.this_process()
    record_run_worker(instance, run, this)
    assert recorded_worker(instance, run.run_id) == this
