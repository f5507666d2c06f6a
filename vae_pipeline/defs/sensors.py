"""Sensors: end the MLflow runs of a Dagster run that failed without ending them (a killed worker)."""

import dagster as dg

from vae_pipeline.defs.tracking.resource import MlflowTracking


@dg.run_failure_sensor(
    name="end_mlflow_runs_of_failed_runs",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks MLflow runs still RUNNING for a failed Dagster run as KILLED (its worker died mid-step).",
)
def end_mlflow_runs_of_failed_runs(context: dg.RunFailureSensorContext, mlflow_tracking: MlflowTracking) -> None:
    # A step that raises ends its MLflow run as FAILED itself; a worker killed with SIGKILL, or
    # marked failed by run monitoring, cannot. Re-materializing resumes such a run from its checkpoint.
    run_id = context.dagster_run.run_id
    for ended in mlflow_tracking.end_runs_of(run_id, "KILLED"):
        context.log.info(f"MLflow run {ended} of failed Dagster run {run_id} marked KILLED")
