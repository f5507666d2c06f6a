"""The monitored launcher's health check: a dead, zombie or replaced run worker is reported FAILED."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from dagster._core.launcher import WorkerStatus

from vae_pipeline.run_launcher import worker_health


def test_a_live_worker_is_running() -> None:
    assert worker_health(os.getpid(), run_started_at=time.time() + 5).status == WorkerStatus.RUNNING


def test_a_worker_that_is_gone_is_failed() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid no longer exists
    result = worker_health(child.pid, run_started_at=None)
    assert result.status == WorkerStatus.FAILED and f"run worker process {child.pid} is gone" in result.msg


def test_a_killed_worker_left_as_a_zombie_is_failed() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        child.kill()
        time.sleep(0.5)  # not reaped yet: a zombie, as a killed run worker is until its parent waits
        result = worker_health(child.pid, run_started_at=None)
        assert result.status == WorkerStatus.FAILED and "zombie" in result.msg
    finally:
        child.wait()


def test_a_pid_reused_by_a_newer_process_is_failed() -> None:
    # This process was created long after a run that started at the epoch: not that run's worker.
    result = worker_health(os.getpid(), run_started_at=0.0)
    assert result.status == WorkerStatus.FAILED and "newer process" in result.msg


def test_no_recorded_pid_is_not_judged_dead() -> None:
    assert worker_health(None, run_started_at=None).status == WorkerStatus.RUNNING
