"""Faults: kill -9 during training, a crash during the parquet write, two materializations at once."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from vae_pipeline.core.model.checkpoint import load_checkpoint
from vae_pipeline.core.model.train import TIMING_KEYS
from vae_pipeline.defs.variants import DEFAULT_VARIANT
from vae_pipeline_tests.e2e.servers import ARTIFACTS, DagsterDev, child_env, manifest
from vae_pipeline_tests.helpers import REPO_ROOT, mlflow_client

pytestmark = pytest.mark.slow

# The default variant (z20-b1-bern) on the slice, with small batches and enough epochs that the
# process can be killed after its first checkpoint and well before its last (about 0.3 s an epoch
# on 2 cores). core/test_train.py proves bit-exact resume of the loop itself; this is the process
# killed for real, its MLflow run continued and the result equal to an uninterrupted run's.
KILL_TRAINING = {"hidden_dims": [256], "epochs": 12, "batch_size": 25, "device": "cpu"}
KILL_VARIANT = DEFAULT_VARIANT.key
KILL_SELECTION = "mnist_raw,mnist_tensors,vae_model"


def driver(data_dir: Path, source_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "vae_pipeline_tests.e2e.driver", "--data-dir", str(data_dir), "--source-dir", str(source_dir), *args]


def run_driver(argv: list[str], log_name: str, timeout_s: float = 300) -> tuple[int, dict[str, Any] | None]:
    """Run the driver to its end; returns its exit code and its last JSON line (None if it died)."""
    log = ARTIFACTS / "logs" / f"{log_name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        process = subprocess.run(
            argv, cwd=REPO_ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=out, timeout=timeout_s, check=False
        )
    lines = [line for line in process.stdout.decode().splitlines() if line.startswith("{")]
    return process.returncode, json.loads(lines[-1]) if lines else None


def run_here(argv: list[str]) -> tuple[int, dict[str, Any] | None]:
    """What run_driver does, in this process: for the runs that are not killed (no interpreter to start, no
    imports to repeat). `argv` is driver()'s; the store is the data folder's own, as in a child."""
    from vae_pipeline_tests.e2e import driver as the_driver

    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as env, contextlib.redirect_stdout(printed):
        env.delenv("MLFLOW_TRACKING_URI", raising=False)  # as child_env() does for a child
        env.delenv("MLFLOW_REGISTRY_URI", raising=False)
        code = the_driver.main(argv[3:])
    lines = [line for line in printed.getvalue().splitlines() if line.startswith("{")]
    return code, json.loads(lines[-1]) if lines else None


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _weights_and_history(folder: Path) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    state = load_checkpoint(folder / "checkpoint.pt")
    history = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in state["history"]]
    return state["model_state"], history


class TestKillDuringTraining:
    def test_resume_ends_where_an_uninterrupted_run_ends(self, tmp_path: Path, mnist_slice_dir: Path) -> None:
        args = ["--select", KILL_SELECTION, "--training", json.dumps(KILL_TRAINING), "--variant", KILL_VARIANT]
        killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"

        # 1. Start, wait for the first epoch's checkpoint, kill -9 the whole process group.
        log = ARTIFACTS / "logs" / "kill-training.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            process = subprocess.Popen(driver(killed_dir, mnist_slice_dir, *args), cwd=REPO_ROOT, env=child_env(), stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline, killed_at = time.monotonic() + 240, None
            while time.monotonic() < deadline and process.poll() is None:
                found = list((killed_dir / "models" / "vae").glob("*/checkpoint.pt"))
                if found and load_checkpoint(found[0])["epoch"] >= 1:
                    os.killpg(process.pid, signal.SIGKILL)
                    killed_at = load_checkpoint(found[0])["epoch"]
                    break
                time.sleep(0.1)
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        assert killed_at is not None, f"training ended or never checkpointed:\n{log.read_text()[-3000:]}"
        assert process.returncode == -signal.SIGKILL
        (folder,) = (killed_dir / "models" / "vae").iterdir()
        assert not (folder / "summary.json").exists()  # not finished...
        assert 1 <= load_checkpoint(folder / "checkpoint.pt")["epoch"] < KILL_TRAINING["epochs"]  # ...and the checkpoint reads
        mlflow_run = json.loads((folder / "mlflow_run.json").read_text())["run_id"]

        # 2. Re-materialize: it resumes from the checkpoint and continues the same MLflow run.
        code, out = run_here(driver(killed_dir, mnist_slice_dir, *args))
        assert code == 0 and out["success"], out
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["mlflow_run_id"] == mlflow_run
        client = mlflow_client(f"sqlite:///{killed_dir / 'mlflow' / 'mlflow.db'}")
        steps = sorted(m.step for m in client.get_metric_history(mlflow_run, "val_neg_elbo"))
        assert steps[-1] == KILL_TRAINING["epochs"] and set(steps) >= set(range(killed_at + 1, KILL_TRAINING["epochs"] + 1))
        assert client.get_run(mlflow_run).info.status == "FINISHED"
        assert client.get_run(mlflow_run).data.params["variant"] == summary["variant"] == KILL_VARIANT
        assert len(client.search_model_versions("name='vae-mnist'")) == 1

        # 3. An uninterrupted run elsewhere ends in the same place, bit for bit.
        code, out = run_here(driver(clean_dir, mnist_slice_dir, *args))
        assert code == 0 and out["success"], out
        clean_folder = clean_dir / "models" / "vae" / folder.name  # same config, data, code, device: same fingerprint
        resumed_weights, resumed_history = _weights_and_history(folder)
        clean_weights, clean_history = _weights_and_history(clean_folder)
        assert resumed_weights.keys() == clean_weights.keys()
        for name in clean_weights:
            assert torch.equal(resumed_weights[name], clean_weights[name]), name
        assert resumed_history == clean_history
        clean_summary = json.loads((clean_folder / "summary.json").read_text())
        drop = set(TIMING_KEYS)
        assert {k: v for k, v in summary["final_metrics"].items() if k not in drop} == {
            k: v for k, v in clean_summary["final_metrics"].items() if k not in drop
        }


class TestCrashDuringParquetWrite:
    def test_the_previous_version_stays_intact_and_readable(self, tmp_path: Path, mnist_slice_dir: Path) -> None:
        data_dir = tmp_path / "data"
        folder = data_dir / "latents" / "vae-mnist"
        # Only what the parquet file needs: ingest, training and the latents.
        embed = ["--select", "mnist_raw,mnist_tensors,vae_model,latent_embeddings"]
        code, out = run_here(driver(data_dir, mnist_slice_dir, "--seed", "0", *embed))
        assert code == 0 and out["success"], out
        v1 = folder / "v0001.parquet"
        v1_hash, v1_rows = sha256(v1), pd.read_parquet(v1)

        # Version 2's latents: killed (SIGKILL) between the finished temporary file and its rename.
        code, out = run_driver(driver(data_dir, mnist_slice_dir, "--seed", "1", *embed, "--crash-before-replace", ".parquet"), "parquet-crash")
        assert code == -signal.SIGKILL and out is None
        assert not (folder / "v0002.parquet").exists()
        leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".v0002.parquet.")]
        assert leftovers, "the crash should have left the finished temporary file behind"
        assert sha256(v1) == v1_hash  # the previous version is untouched...
        pd.testing.assert_frame_equal(pd.read_parquet(v1), v1_rows)  # ...and reads
        everything = pd.read_parquet(folder)  # readers of the folder skip the dot-file
        assert everything.groupby("model_version").size().to_dict() == {1: 1500}

        # Again, without the crash: the trained model is reused and version 2's file is written.
        code, out = run_here(driver(data_dir, mnist_slice_dir, "--seed", "1", *embed))
        assert out is not None and "latent_embeddings" in out["materialized"], out
        both = pd.read_parquet(folder)
        assert both.groupby("model_version").size().to_dict() == {1: 1500, 2: 1500}
        assert sha256(v1) == v1_hash
        client = mlflow_client(f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}")
        assert sorted(int(v.version) for v in client.search_model_versions("name='vae-mnist'")) == [1, 2]


class TestCrashBetweenRegisteringAndFinishing:
    def test_the_version_is_registered_once(self, tmp_path: Path, mnist_slice_dir: Path) -> None:
        """Killed after the version was registered, before summary.json: the re-run registers nothing new."""
        data_dir = tmp_path / "data"
        argv = driver(data_dir, mnist_slice_dir, "--select", KILL_SELECTION, "--crash-before-replace", "summary.json")
        code, out = run_driver(argv, "register-crash")
        assert code == -signal.SIGKILL and out is None
        client = mlflow_client(f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}")
        registered = [(int(v.version), v.run_id) for v in client.search_model_versions("name='vae-mnist'")]
        assert len(registered) == 1  # the crash came after registering
        (folder,) = (data_dir / "models" / "vae").iterdir()
        assert not (folder / "summary.json").exists()

        code, out = run_here(driver(data_dir, mnist_slice_dir, "--select", KILL_SELECTION))
        assert code == 0 and out["success"], out
        assert [(int(v.version), v.run_id) for v in client.search_model_versions("name='vae-mnist'")] == registered
        summary = json.loads((folder / "summary.json").read_text())
        assert (summary["model_version"], summary["mlflow_run_id"]) == registered[0]
        assert client.get_run(summary["mlflow_run_id"]).info.status == "FINISHED"
        experiment = client.get_experiment_by_name("vae-pipeline").experiment_id
        assert len(client.search_logged_models(experiment_ids=[experiment])) == 1  # the model was logged once too


class TestTwoMaterializationsAtOnce:
    def test_through_dagster_dev_and_the_mlflow_server(
        self, dagster_dev: DagsterDev, tiny_config: Callable[..., dict[str, Any]], first_run: str
    ) -> None:
        client = mlflow_client(dagster_dev.tracking_uri)
        before = {int(v.version) for v in client.search_model_versions("name='vae-mnist'")}
        run_ids = [dagster_dev.launch(tiny_config(seed=seed)) for seed in (11, 12)]
        statuses = [dagster_dev.wait(run_id, timeout_s=400) for run_id in run_ids]
        data_dir = dagster_dev.data_dir
        versions = []
        for run_id, status in zip(run_ids, statuses):
            events = dagster_dev.run_events(run_id)
            materialized = {e["stepKey"] for e in events if e["__typename"] == "MaterializationEvent"}
            assert {"vae_model", "latent_embeddings", "prior_samples", "reconstruction_report", "latent_evaluation"} <= materialized
            # Against the first run's champion a tiny model may fail a promotion gate (which skips
            # champion_model); that is the only failure allowed: nothing may crash.
            for failure in (e for e in events if e["__typename"] == "ExecutionStepFailureEvent"):
                assert failure["stepKey"].endswith("_than_champion"), failure
                assert "blocking asset check failed" in failure["error"]["message"], failure
            assert status == "SUCCESS" or "champion_model" not in materialized
            vae = manifest(data_dir, "vae_model", run_id)
            latents = manifest(data_dir, "latent_embeddings", run_id)
            samples = manifest(data_dir, "prior_samples", run_id)
            report = manifest(data_dir, "reconstruction_report", run_id)
            assert vae["reused"] is False
            # each run's manifests point at its own model version, never at the other run's
            assert latents["model_version"] == samples["model_version"] == report["model_version"] == vae["model_version"]
            table = pq.read_table(data_dir / latents["path"])
            assert table.schema.metadata[b"model_version"] == str(vae["model_version"]).encode()
            assert set(table.column("model_version").to_pylist()) == {vae["model_version"]} and table.num_rows == 1500
            assert client.get_run(vae["mlflow_run_id"]).data.tags["dagster.run_id"] == run_id
            versions.append(vae["model_version"])
        assert len(set(versions)) == 2
        times = [dagster_dev.graphql("query($id: ID!) { runOrError(runId: $id) { ... on Run { startTime endTime } } }",
                                     {"id": run_id})["runOrError"] for run_id in run_ids]
        assert max(t["startTime"] for t in times) < min(t["endTime"] for t in times), times  # they did overlap
        after = {int(v.version) for v in client.search_model_versions("name='vae-mnist'")}
        assert after - before == set(versions)
        counts = pd.read_parquet(data_dir / "latents" / "vae-mnist").groupby("model_version").size().to_dict()
        # Both runs' rows are there, whole; every version with rows is registered. (Other tests on this server
        # register versions without latents: the retry test materializes only up to vae_model.)
        assert {v: counts.get(v) for v in versions} == {v: 1500 for v in versions} and set(counts) <= after

    def test_two_processes_on_the_default_sqlite_store(self, tmp_path: Path, mnist_slice_dir: Path) -> None:
        """Two processes, one data folder, MLflow's default sqlite store (no server)."""
        data_dir = tmp_path / "data"
        logs = [open(ARTIFACTS / "logs" / f"concurrent-sqlite-{seed}.log", "wb") for seed in (21, 22)]
        processes = [
            subprocess.Popen(driver(data_dir, mnist_slice_dir, "--seed", str(seed)), cwd=REPO_ROOT, env=child_env(),
                             stdout=subprocess.PIPE, stderr=log)
            for seed, log in zip((21, 22), logs)
        ]
        outs = []
        for process, log in zip(processes, logs):
            try:
                stdout, _ = process.communicate(timeout=300)
            finally:
                if process.poll() is None:
                    process.kill()
                log.close()
            outs.append(json.loads([line for line in stdout.decode().splitlines() if line.startswith("{")][-1]))
        versions = []
        for out in outs:
            assert {"vae_model", "latent_embeddings", "prior_samples", "reconstruction_report", "latent_evaluation"} <= set(out["materialized"]), out
            vae = manifest(data_dir, "vae_model", out["run_id"])
            latents = manifest(data_dir, "latent_embeddings", out["run_id"])
            assert latents["model_version"] == vae["model_version"]
            assert set(pd.read_parquet(data_dir / latents["path"])["model_version"]) == {vae["model_version"]}
            versions.append(vae["model_version"])
        assert sorted(versions) == [1, 2]
        client = mlflow_client(f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}")
        assert sorted(int(v.version) for v in client.search_model_versions("name='vae-mnist'")) == [1, 2]
        assert pd.read_parquet(data_dir / "latents" / "vae-mnist").groupby("model_version").size().to_dict() == {1: 1500, 2: 1500}
