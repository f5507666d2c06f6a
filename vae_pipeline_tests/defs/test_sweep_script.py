"""The README's quick path for a sweep: scripts/sweep.sh on one machine, sqlite, steps in-process.

The script runs as a user runs it (the repository's .venv, an instance and data folder of its own),
on a sweep file of one tiny variant and the tiny whole-graph config; nothing is downloaded. What a
sweep of several variants produces is tested once, on the team deployment (e2e/test_team.py); here
the script's own part: its runs, in order, each of its own assets, into one table.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from vae_pipeline_tests.helpers import REPO_ROOT, mlflow_client, run_config, tracking_uri

pytestmark = pytest.mark.slow

VARIANTS = ["z2-b1-bern"]


def test_a_sweep_from_the_script_trains_and_compares_every_variant(tmp_path: Path, mnist_slice_dir: Path) -> None:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"variants": [{"latent_dim": 2, "beta": 1}]}))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"ops": run_config(mnist_slice_dir).to_config_dict()["ops"]}))
    data = tmp_path / "data"
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "VIRTUAL_ENV", "MLFLOW_TRACKING_URI")},
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "VAE_PIPELINE_DATA_DIR": str(data),
        "VAE_PIPELINE_MNIST_DIR": str(mnist_slice_dir),
    }
    done = subprocess.run(["bash", "scripts/sweep.sh", str(sweep), "-c", str(config)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    output = f"exit {done.returncode}\n--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-8000:]}"
    assert done.returncode == 0, output
    assert [line for line in done.stdout.splitlines() if line.startswith("==")] == [
        "== shared: raw data, tensor store, judge", *[f"== variant {v}" for v in VARIANTS], "== sweep comparison",
        "== every variant done: " + str(data) + "/sweeps/vae-<dataset>/comparison.parquet"]

    table = pd.read_parquet(data / "sweeps" / "vae-mnist" / "comparison.parquet")
    assert list(table["variant"]) == VARIANTS and table["comparable"].all(), table
    client = mlflow_client(tracking_uri(data))
    assert sorted(v.tags["variant"] for v in client.search_model_versions("name='vae-mnist'")) == VARIANTS
    # One run per variant; the shared assets and the comparison once each, in runs of their own.
    runs = {path.stem for path in (data / "manifests" / "vae_model").glob("*/*.json")}
    assert len(runs) == len(VARIANTS)
    assert len(list((data / "manifests" / "mnist_tensors").glob("*.json"))) == 1
    assert len(list((data / "manifests" / "sweep_comparison").glob("*.json"))) == 1
    assert runs.isdisjoint(p.stem for p in (data / "manifests" / "mnist_tensors").glob("*.json"))
    # Each step ran in its run's process (in-process, the default): one pid per run in the event log.
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        for run in instance.get_runs():
            pids = {e.dagster_event.pid for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)}
            assert len(pids) == 1, (run.run_id, pids)
