"""Runs whose process died: marked FAILURE in Dagster, and their MLflow runs still RUNNING marked FAILED.

The process that executes a run records itself when execution begins (`start_run_worker`, called
by the code location's executor, defs/validation.py; the record is read by
vae_pipeline/run_launcher.py). Run monitoring in the daemon checks STARTED runs every few seconds
through that record; without a daemon (`dg launch`, scripts/pipeline.sh) nothing would, and a run
killed with -9 stayed STARTED, its MLflow run RUNNING, for good. So each run, as it starts, first
fails the dead runs of its instance, and `python -m vae_pipeline.runs_cli fail-dead-runs` does so on
request. Only runs whose recorded worker is a process of this host are judged: one alive, not
recorded yet, or on another machine is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.events import JobFailureData, RunFailureReason
from dagster._core.launcher import WorkerStatus
from mlflow.exceptions import MlflowException

from vae_pipeline.defs.resources import default_resources
from vae_pipeline.defs.tracking.resource import MlflowTracking, TrackingError
from vae_pipeline.run_launcher import RunWorker, record_run_worker, run_worker_health, this_host

CHECK_COMMAND = "python -m vae_pipeline.runs_cli fail-dead-runs"


@dataclass(frozen=True)
class DeadRun:
    """A STARTED run whose worker process on this host is gone, and why it is judged so."""

    run: DagsterRun
    reason: str  # e.g. "run worker process 4242 is gone (killed or crashed)"


def dead_runs(instance: DagsterInstance, skip: str | None = None) -> list[DeadRun]:
    """The STARTED runs of `instance` (but `skip`) whose recorded worker is a process of this host that is gone."""
    found = []
    here = this_host()
    for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        if run.run_id == skip:
            continue
        worker, health = run_worker_health(instance, run.run_id)
        # Dagster's own run worker records no host: only the daemon, on the machine that launched it, judges it.
        if worker is not None and worker.host == here and health.status == WorkerStatus.FAILED:
            found.append(DeadRun(run, str(health.msg)))
    return found


def fail_dead_run(instance: DagsterInstance, dead: DeadRun, tracking: MlflowTracking, by: str) -> list[str] | None:
    """End the dead run's MLflow runs, then mark it FAILURE naming `dead.reason` and `by` (who checked).

    Returns the MLflow runs ended, or None when the run was no longer STARTED (the daemon or
    another run got there first). The MLflow runs go first: if the tracking store fails, the run
    stays STARTED and the next check tries again.
    """
    ended = tracking.end_runs_of(dead.run.run_id, "FAILED")
    current = instance.get_run_by_id(dead.run.run_id)
    if current is None or current.status != DagsterRunStatus.STARTED:
        return None
    mlflow = f" Its MLflow runs {', '.join(ended)} were marked FAILED." if ended else ""
    instance.report_run_failed(
        current,
        f"{dead.reason[:1].upper()}{dead.reason[1:]}; marked failed by {by}.{mlflow} Re-execute it from failure to finish it: "
        "training resumes from its last epoch checkpoint.",
        JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION),
    )
    return ended


def start_run_worker(plan_context) -> None:  # noqa: ANN001 - Dagster's PlanOrchestrationContext
    """Record this process as the run's worker, then fail the dead runs of this host (the next launch's check)."""
    instance, run = plan_context.instance, plan_context.dagster_run
    record_run_worker(instance, run, RunWorker.this_process())
    dead = dead_runs(instance, skip=run.run_id)
    if not dead:
        return
    tracking = default_resources()["mlflow_tracking"]
    for stale in dead:
        try:
            ended = fail_dead_run(instance, stale, tracking, by=f"the start of run {run.run_id}")
        except (TrackingError, MlflowException) as exc:
            # Not this run's failure: its own steps check the store again and say so.
            plan_context.log.warning(
                f"Run {stale.run.run_id}: {stale.reason}, but its MLflow runs could not be ended ({exc}); it stays "
                f"STARTED. Run `{CHECK_COMMAND}` once the tracking store answers."
            )
            continue
        if ended is not None:
            mlflow = f"; its MLflow runs {', '.join(ended)} marked FAILED" if ended else ""
            plan_context.log.warning(f"Marked run {stale.run.run_id} FAILURE: {stale.reason}{mlflow}")
