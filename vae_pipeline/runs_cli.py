"""Mark failed the runs whose process died, without the daemon.

    python -m vae_pipeline.runs_cli fail-dead-runs

A run killed with -9 (or by the OOM killer, or a reboot) cannot record its end: it stays STARTED
and its MLflow runs RUNNING. This marks every STARTED run of the instance whose worker process on
this machine is gone FAILURE, with the reason, and its RUNNING MLflow runs FAILED. Runs whose
worker is alive, or runs on another machine, are left alone. The next run that starts does the
same; the daemon's run monitoring does it within seconds.

The instance is $DAGSTER_HOME's (scripts/instance.sh sets it); the MLflow store is the code
location's ($MLFLOW_TRACKING_URI, else the one in $VAE_PIPELINE_DATA_DIR).
"""

from __future__ import annotations

import argparse
import sys

import dagster as dg
from mlflow.exceptions import MlflowException

from vae_pipeline.defs.resources import default_resources
from vae_pipeline.defs.stale_runs import CHECK_COMMAND, dead_runs, fail_dead_run
from vae_pipeline.defs.tracking.resource import TrackingError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vae_pipeline.runs_cli", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fail-dead-runs", help="mark failed the STARTED runs whose worker process on this machine is gone")
    parser.parse_args(argv)
    tracking = default_resources()["mlflow_tracking"]
    with dg.DagsterInstance.get() as instance:
        dead = dead_runs(instance)
        for stale in dead:
            try:
                ended = fail_dead_run(instance, stale, tracking, by=f"`{CHECK_COMMAND}`")
            except (TrackingError, MlflowException) as exc:
                print(f"error: run {stale.run.run_id}: {stale.reason}, but its MLflow runs could not be ended: {exc}\n"
                      "It stays STARTED; run this again once the tracking store answers.", file=sys.stderr)
                return 1
            if ended is None:
                print(f"run {stale.run.run_id}: already ended by another check")
            else:
                print(f"run {stale.run.run_id}: {stale.reason}; marked FAILURE"
                      + (f", MLflow runs {', '.join(ended)} marked FAILED" if ended else ", no MLflow run was RUNNING"))
        if not dead:
            print("no dead runs: no STARTED run has a worker process on this machine that is gone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
