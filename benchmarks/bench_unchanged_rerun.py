"""A forced re-materialization of everything with nothing changed, from the CLI: wall time, step times, what was reused.

Run it after the pipeline ran once (bash scripts/pipeline.sh), in the same instance and data folder:

    source .venv/bin/activate && source scripts/instance.sh && python benchmarks/bench_unchanged_rerun.py

It launches `dg launch --job vae_pipeline_job --partition <default variant>` (the partition the
pipeline script trains, z20-b1-bern) and prints the wall time of the command, each step's
time (benchmarks/step_times.py), each asset's `reused` metadata, and the MLflow runs and registered
versions before and after (the target: steps under 20 s in all, no new run, no new version).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_times import main as print_step_times  # noqa: E402 - a sibling script

from vae_pipeline.defs.resources import default_resources  # noqa: E402
from vae_pipeline.defs.variants import DEFAULT_VARIANT, VARIANTS  # noqa: E402


def _mlflow_counts() -> tuple[int, int]:
    tracking = default_resources()["mlflow_tracking"]
    client = MlflowClient(tracking_uri=tracking.uri(), registry_uri=tracking.uri())
    experiment = client.get_experiment_by_name(tracking.experiment_name)
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return len(runs), len(client.search_model_versions())


def main() -> None:
    instance = dg.DagsterInstance.get()
    variant = DEFAULT_VARIANT.key
    if not instance.has_dynamic_partition(VARIANTS.name, variant):
        sys.exit(f"{variant} is not a partition of this instance: run bash scripts/pipeline.sh first, in this instance.")
    before = _mlflow_counts()
    command = ["dg", "launch", "--job", "vae_pipeline_job", "--partition", variant]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"dg launch failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    print(f"{' '.join(command)}: {wall:.1f} s wall (process start, imports and the run)")
    print_step_times()
    run = instance.get_runs(limit=1)[0]
    for event in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
        materialization = event.asset_materialization
        reused = materialization.metadata.get("reused")
        print(f"  {materialization.asset_key.to_user_string():25s} reused={reused.value if reused else '-'}")
    after = _mlflow_counts()
    print(f"MLflow runs {before[0]} -> {after[0]}, registered versions {before[1]} -> {after[1]}")


if __name__ == "__main__":
    main()
