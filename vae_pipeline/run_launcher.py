"""Dagster's default run launcher, plus the worker-health check that run monitoring needs.

Run monitoring (the daemon's `run_monitoring` setting) marks a run failed when its launcher
reports the run's worker dead, so that a run whose process was killed (kill -9, the OOM killer,
a reboot) does not stay STARTED forever and can be retried. Dagster's `DefaultRunLauncher`
cannot report that. This one can, on one machine: the run worker records its pid in the run's
"Started process for run (pid: N)" event, and the daemon looks that process up. A process that is
gone, a zombie, or a newer process that reuses the pid means the worker died. The instance the
scripts create (deploy/local/dagster.yaml) names this class; a multi-machine deployment uses a
launcher or executor whose workers report their own health.
"""

from __future__ import annotations

import psutil
from dagster import DagsterEventType, DagsterInstance, DagsterRun
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus

_PID_MESSAGE = "Started process for run (pid: "


def worker_pid(instance: DagsterInstance, run_id: str) -> int | None:
    """The pid the run's worker reported when it started, or None when it has not reported one."""
    for entry in reversed(instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)):  # the latest worker
        message = entry.dagster_event.message if entry.dagster_event else None
        if message and message.startswith(_PID_MESSAGE):
            return int(message[len(_PID_MESSAGE) :].split(")")[0])
    return None


def worker_health(pid: int | None, run_started_at: float | None) -> CheckRunHealthResult:
    """Whether process `pid`, the worker of a run that started at `run_started_at` (epoch seconds), still runs."""
    if pid is None:
        # A run executed inside another process (the CLI's `dg launch`) has no
        # separate worker to look at; it is not reported dead on a guess.
        return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker pid recorded; not checked")
    try:
        process = psutil.Process(pid)
        status, created = process.status(), process.create_time()
    except psutil.NoSuchProcess:
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} is gone (killed or crashed)")
    if status == psutil.STATUS_ZOMBIE:
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} has exited (a zombie, killed or crashed)")
    if run_started_at is not None and created > run_started_at + 1.0:
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} is gone; the pid now belongs to a newer process")
    return CheckRunHealthResult(WorkerStatus.RUNNING)


class MonitoredRunLauncher(DefaultRunLauncher):
    """Launches runs like Dagster's default launcher; reports whether a run's worker process is alive."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        record = self._instance.get_run_record_by_id(run.run_id)
        started = record.start_time if record is not None else None
        return worker_health(worker_pid(self._instance, run.run_id), started)
