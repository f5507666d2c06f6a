"""Dagster's default run launcher, plus the worker-health check that run monitoring needs.

Run monitoring (the daemon's `run_monitoring` setting) marks a run failed when its launcher
reports the run's worker dead, so that a run whose process was killed (kill -9, the OOM killer,
a reboot) does not stay STARTED forever and can be retried. Dagster's `DefaultRunLauncher`
cannot report that. This one can: the process that executes a run records itself in the run's
event log ("Started process for run (pid: N) on host H.", with its host and creation time as
metadata; `record_run_worker`), whoever launched it: the daemon's run worker and a `dg launch`
alike. A process that is gone, a zombie, or another process that now holds the pid means the
worker died. Only processes of this host are looked at: a run recorded on another machine (a
shared PostgreSQL instance) is left to that machine. The instance the scripts create
(deploy/local/dagster.yaml) names this class.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import psutil
from dagster import DagsterEventType, DagsterInstance, DagsterRun
from dagster._core.events import EngineEventData
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus

# Dagster's run worker (`dagster api execute_run`) starts its event so too; both are read.
_PID_MESSAGE = "Started process for run (pid: "
# Process creation times read twice differ by rounding only; a reused pid's differ by far more.
_SAME_PROCESS_S = 1.0


def this_host() -> str:
    return socket.gethostname()


@dataclass(frozen=True)
class RunWorker:
    """The process that executes a run, as recorded in its event log: enough to tell later whether it still runs."""

    pid: int
    host: str | None = None  # None: recorded by Dagster's run worker, which names no host (the launcher's machine)
    started_at: float | None = None  # the process's creation time (epoch seconds); None when not recorded

    @classmethod
    def this_process(cls) -> RunWorker:
        return cls(os.getpid(), this_host(), psutil.Process().create_time())


def record_run_worker(instance: DagsterInstance, run: DagsterRun, worker: RunWorker) -> None:
    """File `worker` as the process executing `run` (the latest record wins: a resumed run has a new worker)."""
    metadata = {"pid": str(worker.pid)}
    if worker.host is not None:
        metadata["host"] = worker.host
    if worker.started_at is not None:
        metadata["process_started_at"] = repr(worker.started_at)
    where = f" on host {worker.host}" if worker.host is not None else ""
    instance.report_engine_event(f"{_PID_MESSAGE}{worker.pid}){where}.", run, EngineEventData(metadata=metadata))


def recorded_worker(instance: DagsterInstance, run_id: str) -> RunWorker | None:
    """The process that last recorded itself as the run's worker, or None when none has."""
    for entry in reversed(instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)):  # the latest worker
        event = entry.dagster_event
        message = event.message if event else None
        if not (message and message.startswith(_PID_MESSAGE)):
            continue
        pid = int(message[len(_PID_MESSAGE) :].split(")")[0])
        data = event.event_specific_data
        metadata = data.metadata if isinstance(data, EngineEventData) else {}
        host = metadata["host"].value if "host" in metadata else None
        started = float(metadata["process_started_at"].value) if "process_started_at" in metadata else None
        return RunWorker(pid, host, started)
    return None


def worker_health(worker: RunWorker | None, run_started_at: float | None) -> CheckRunHealthResult:
    """Whether `worker`, the process of a run that started at `run_started_at` (epoch seconds), still runs.

    RUNNING unless the worker is known dead: run monitoring fails a run on any other answer, so a
    worker that cannot be looked at from here (none recorded, another host) is not reported dead.
    """
    if worker is None:
        # A run that has not reached its executor yet, or one executed by an older version of this code.
        return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker pid recorded; not checked")
    pid, here = worker.pid, this_host()
    if worker.host is not None and worker.host != here:
        # Its pid means nothing here; the machine it runs on judges it.
        return CheckRunHealthResult(
            WorkerStatus.RUNNING, f"run worker process {pid} runs on host {worker.host}, not this one ({here}); not checked here"
        )
    try:
        process = psutil.Process(pid)
        status, created = process.status(), process.create_time()
    except psutil.NoSuchProcess:
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} is gone (killed or crashed)")
    if status == psutil.STATUS_ZOMBIE:
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} has exited (a zombie, killed or crashed)")
    if worker.started_at is not None:
        if abs(created - worker.started_at) > _SAME_PROCESS_S:
            return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} is gone; the pid now belongs to another process")
    elif run_started_at is not None and created > run_started_at + _SAME_PROCESS_S:
        # No creation time recorded: a process younger than the run cannot be its worker.
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} is gone; the pid now belongs to a newer process")
    return CheckRunHealthResult(WorkerStatus.RUNNING)


def run_worker_health(instance: DagsterInstance, run_id: str) -> tuple[RunWorker | None, CheckRunHealthResult]:
    """The run's recorded worker and whether it still runs, judged from this host."""
    record = instance.get_run_record_by_id(run_id)
    started = record.start_time if record is not None else None
    worker = recorded_worker(instance, run_id)
    return worker, worker_health(worker, started)


class MonitoredRunLauncher(DefaultRunLauncher):
    """Launches runs like Dagster's default launcher; reports whether a run's worker process is alive."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        return run_worker_health(self._instance, run.run_id)[1]
