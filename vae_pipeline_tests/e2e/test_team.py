"""The team deployment, started by its own script: PostgreSQL, Redis, MLflow, two Celery workers, Dagster.

`deploy/team/start.sh` starts everything on free ports of 127.0.0.1 with all state under a
temporary folder (VAE_TEAM_ROOT); `deploy/team/stop.sh` stops it at the end. The tests use it as a
team would: add variants and launch a sweep backfill through the webserver's GraphQL API with the
run config of deploy/team/celery.yaml, then read the results back from where the team reads them
(the MLflow server's API, the Dagster database, the data folder). A Celery worker killed in the
middle of training is the fault injected: its run fails, the daemon retries it, and the retry
resumes training from the checkpoint.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import psycopg2
import pytest
import yaml

from vae_pipeline.core.checkpoint import load_checkpoint
from vae_pipeline_tests.conftest import REPO_ROOT
from vae_pipeline_tests.e2e.conftest import (
    ARTIFACTS,
    TERMINAL,
    DagsterDev,
    Server,
    child_env,
    free_port,
    mlflow_client,
    wait_for,
    wait_for_location,
)

pytestmark = pytest.mark.slow

START, STOP = REPO_ROOT / "deploy" / "team" / "start.sh", REPO_ROOT / "deploy" / "team" / "stop.sh"
CELERY_RUN_CONFIG = REPO_ROOT / "deploy" / "team" / "celery.yaml"
WORKERS = ("worker-1", "worker-2")
# The sweep: three variants of the tiny config (latent size and beta from the key).
SWEEP = ["z2-b1-bern", "z4-b1-bern", "z4-b4-bern"]
# What every variant shares, materialized once before the sweep (as a team has them already). Inside
# the backfill they would make it plan latent_evaluation as a second run per variant.
SHARED = ["mnist_raw", "mnist_tensors", "digit_classifier"]
PER_VARIANT = ["vae_model", "autoencoder_baseline", "latent_embeddings", "prior_samples", "reconstruction_report",
               "latent_evaluation"]
# Killed during training (1-3 s an epoch on the slice): long enough to be killed after its first
# epoch's checkpoint, short enough that the retry finishes in well under a minute.
LONG_VARIANT = "z8-b1-bern"
LONG_TRAINING = {"hidden_dims": [256], "epochs": 20, "batch_size": 50, "device": "cpu"}
LONG_SEED = 78

LAUNCH_BACKFILL = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message stack } ... on Error { message } } }"""
BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { status runs(limit: 100) { runId status } } ... on PythonError { message } } }"""


def _postgres_bin() -> Path | None:
    """The folder of initdb as start.sh finds it (PATH, else Debian's /usr/lib/postgresql/<version>/bin)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


@contextmanager
def _team_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The folder for all of the deployment's state: a temporary one of pytest's, except as root.

    As root, start.sh runs PostgreSQL as the `postgres` user, which must pass through every parent of
    its data folder. pytest makes its folders 0700, and any pytest session that starts meanwhile makes
    /tmp/pytest-of-root 0700 again (pg_ctl could then no longer stop the server), so as root the state
    goes to a folder of its own in the system's temporary folder, removed afterwards.
    """
    if os.geteuid() != 0:
        yield tmp_path_factory.mktemp("team")
        return
    root = Path(tempfile.mkdtemp(prefix="vae-team-"))
    root.chmod(0o711)  # others may pass through, not list
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _read_env(path: Path) -> dict[str, str]:
    """The `export NAME=value` lines that start.sh writes to team.env."""
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = shlex.split(value)[0] if value else ""
    return env


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}


def _repository_state() -> tuple[set[str], dict[str, tuple[int, int]]]:
    """What a process that ignored the configured roots would change: the repository's top level, data/ and mlruns/."""
    return {p.name for p in REPO_ROOT.iterdir()}, {**_files(REPO_ROOT / "data"), **_files(REPO_ROOT / "mlruns")}


@dataclass
class Team:
    root: Path
    cwd: Path            # where start.sh was run from
    env: dict[str, str]  # team.env: the environment of the deployment's processes
    dev: DagsterDev      # the webserver's GraphQL API (DagsterDev's helpers; the server is not ours to stop)
    workers: dict[int, str]  # process group (the worker's pid) -> worker name
    repository_before: tuple[set[str], dict[str, tuple[int, int]]]

    @contextmanager
    def instance(self) -> Iterator[dg.DagsterInstance]:
        """The team's Dagster instance, opened as any of its processes opens it (dagster.yaml + team.env)."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            with dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"]) as instance:
                yield instance
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _run(argv: list[str], env: dict[str, str], cwd: Path, log: Path, timeout_s: float) -> subprocess.CompletedProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              timeout=timeout_s, check=False)


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, mnist_slice_dir: Path) -> Iterator[Team]:
    if _postgres_bin() is None:
        pytest.fail("PostgreSQL's initdb not found: apt-get install postgresql (.ci/run installs it)")
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not found: apt-get install redis-server (.ci/run installs it)")
    with _team_root(tmp_path_factory) as root:
        yield from _started_team(root, tmp_path_factory.mktemp("team_cwd"), mnist_slice_dir)


def _started_team(root: Path, cwd: Path, mnist_slice_dir: Path) -> Iterator[Team]:
    """start.sh, run from `cwd` with all state under `root`; stop.sh afterwards, whatever happened."""
    ports = {name: free_port() for name in ("PG", "REDIS", "MLFLOW", "DAGSTER")}
    env = child_env(
        VAE_TEAM_ROOT=str(root), **{f"VAE_TEAM_{name}_PORT": str(port) for name, port in ports.items()},
        VAE_PIPELINE_MNIST_DIR=str(mnist_slice_dir),
        # The tests launch every run themselves; automation would start more with the default config.
        VAE_PIPELINE_AUTOMATION="off",
    )
    for name in ("VAE_PIPELINE_DATA_DIR", "DAGSTER_HOME", "DAGSTER_PG_PASSWORD"):  # start.sh's to set
        env.pop(name, None)
    log = ARTIFACTS / "logs" / "team-start.log"
    log.parent.mkdir(parents=True, exist_ok=True)  # before the repository's state is taken
    log.unlink(missing_ok=True)
    repository_before = _repository_state()
    started = time.monotonic()
    try:
        result = _run(["bash", str(START)], env, cwd, log, 400)
        assert result.returncode == 0, f"start.sh failed:\n{log.read_text(errors='replace')[-4000:]}"
        print(f"start.sh: {time.monotonic() - started:.0f} s")  # shown with -s
        team_env = _read_env(root / "team.env")
        server = Server("dagster-webserver", None, ports["DAGSTER"], root / "logs" / "dagster-webserver.log")  # type: ignore[arg-type]
        dev = DagsterDev(server, Path(team_env["DAGSTER_HOME"]), Path(team_env["VAE_PIPELINE_DATA_DIR"]), team_env["MLFLOW_TRACKING_URI"])

        wait_for_location(dev, 240, 1.0)
        workers = {int((root / "run" / f"{name}.pid").read_text()): name for name in WORKERS}
        yield Team(root, cwd, team_env, dev, workers, repository_before)
    finally:
        stop_log = ARTIFACTS / "logs" / "team-stop.log"
        stop_log.unlink(missing_ok=True)
        stopped = _run(["bash", str(STOP)], env, cwd, stop_log, 180)
        if (root / "logs").is_dir():  # CI keeps the servers' logs
            shutil.copytree(root / "logs", ARTIFACTS / "logs" / "team", dirs_exist_ok=True)
        assert stopped.returncode == 0, stop_log.read_text(errors="replace")[-2000:]
        assert not list((root / "run").glob("*.pid")), "stop.sh left processes behind"
        assert not (root / "postgres" / "data" / "postmaster.pid").exists(), "stop.sh left PostgreSQL running"


@pytest.fixture(scope="module")
def celery_run_config(tiny_config: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """The tiny config plus the team's Celery executor, exactly as deploy/team/celery.yaml gives it."""
    celery = yaml.safe_load(CELERY_RUN_CONFIG.read_text())

    def make(seed: int = 0, **training: object) -> dict[str, Any]:
        return {**tiny_config(seed=seed, **training), **celery}

    return make


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _events(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> list[dg.DagsterEvent]:
    return [e.dagster_event for e in instance.all_logs(run_id, of_type=kind) if e.dagster_event is not None]


def _step_pids(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    """The pid of the process that ran each step (its STEP_START event)."""
    return {e.step_key: e.pid for e in _events(instance, run_id, dg.DagsterEventType.STEP_START)}


def _launch(team: Team, config: dict[str, Any], assets: list[str], tags: dict[str, str] | None = None) -> str:
    """A run of `assets` through GraphQL, as the UI's Materialize launches it (the implicit asset job)."""
    return team.dev.client().submit_job_execution(
        "__ASSET_JOB", repository_location_name="vae_pipeline", repository_name="__repository__",
        run_config=config, tags=tags or {}, asset_selection=assets,
    )


def test_a_sweep_backfill_runs_on_two_celery_workers_into_postgres_and_mlflow(
    team: Team, celery_run_config: Callable[..., dict[str, Any]],
) -> None:
    config = celery_run_config()
    shared = _launch(team, config, SHARED)
    assert team.dev.wait(shared, timeout_s=400) == "SUCCESS", team.dev.run_events(shared)[-20:]

    # The sweep as a team launches it from the UI: add the variants, then backfill those partitions.
    team.dev.add_variants(*SWEEP)
    started = time.monotonic()
    launched = team.dev.graphql(LAUNCH_BACKFILL, {"params": {
        "partitionNames": SWEEP, "assetSelection": [{"path": [a]} for a in [*PER_VARIANT, "sweep_comparison"]],
        "runConfigData": config, "title": "sweep on celery",
    }})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched

    def backfill_done() -> dict[str, Any] | None:
        found = team.dev.graphql(BACKFILL, {"id": launched["backfillId"]})["partitionBackfillOrError"]
        assert found["__typename"] == "PartitionBackfill", found
        return found if found["status"] not in ("REQUESTED", "CANCELING") else None

    backfill = wait_for("the sweep backfill", backfill_done, 900, 2.0, log=team.root / "logs" / "dagster-daemon.log")
    elapsed = time.monotonic() - started
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    runs = [r["runId"] for r in backfill["runs"]]
    assert all(r["status"] == "SUCCESS" for r in backfill["runs"]), backfill["runs"]

    with team.instance() as instance:
        # (d) The runs are in PostgreSQL: the instance every process opens is, and its runs table holds them.
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        by_partition = {instance.get_run_by_id(r).tags.get("dagster/partition"): r for r in runs}
        assert sorted(k for k in by_partition if k) == sorted(SWEEP) and None in by_partition, by_partition
        assert len(runs) == len(SWEEP) + 1, "one run per variant and one for the sweep table"
        pids = {run_id: _step_pids(instance, run_id) for run_id in [shared, *runs]}
        hosts = {run_id: {e.event_specific_data.metadata["Celery worker"].value.split("@")[0]
                          for e in _events(instance, run_id, dg.DagsterEventType.ENGINE_EVENT)
                          if e.message.endswith("in celery worker")} for run_id in [shared, *runs]}
    connection = psycopg2.connect(host=team.env["DAGSTER_PG_HOST"], port=team.env["DAGSTER_PG_PORT"], user=team.env["DAGSTER_PG_USER"],
                                  password=team.env["DAGSTER_PG_PASSWORD"], dbname=team.env["DAGSTER_PG_DB"])
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT run_id, status, partition FROM runs")
            stored = {run_id: (status, partition) for run_id, status, partition in cursor.fetchall()}
    finally:
        connection.close()
    for variant, run_id in by_partition.items():
        assert stored[run_id] == ("SUCCESS", variant), (run_id, stored.get(run_id))
    assert stored[shared][0] == "SUCCESS"

    # (a) Every step ran in a pool process of one of the two workers (its process group), none in a
    # run worker; both workers took steps; within one variant's run, steps ran in both.
    for run_id, steps in pids.items():
        where = {step: team.workers.get(_group(pid)) for step, pid in steps.items()}
        assert steps and None not in where.values(), (run_id, steps, where)
        assert set(steps.values()).isdisjoint(team.workers), "a step ran in a worker's main process, not its pool"
    variant_runs = [by_partition[v] for v in SWEEP]
    assert {step for step in pids[variant_runs[0]]} >= set(PER_VARIANT)
    assert set().union(*hosts.values()) == set(WORKERS), hosts
    assert any(len({_group(pid) for pid in pids[r].values()}) == 2 for r in variant_runs), {r: pids[r] for r in variant_runs}

    # (b) Each variant is a version of vae-mnist on the MLflow server, with its own run tagged with it,
    # and its artifacts went through the server into the deployment's artifact folder.
    client = mlflow_client(team.env["MLFLOW_TRACKING_URI"])
    versions = {v.tags.get("variant"): v for v in client.search_model_versions("name='vae-mnist'")}
    assert sorted(versions) == sorted(SWEEP)
    assert len({v.run_id for v in versions.values()}) == len(SWEEP)
    for variant, version in versions.items():
        run = client.get_run(version.run_id)
        assert (run.data.tags["variant"], run.info.status) == (variant, "FINISHED")
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
        assert list((team.root / "mlartifacts").rglob(f"{version.run_id}/artifacts/checkpoint/checkpoint.pt"))

    # (c) The sweep table holds every variant.
    table = pd.read_parquet(team.dev.data_dir / "sweeps" / "vae-mnist" / "comparison.parquet")
    assert sorted(table["variant"]) == sorted(SWEEP)

    # (e) Nothing outside the configured roots: not the embedded MLflow store in the data folder (its
    # folder may be there, empty), not the repository (data/, mlruns/, new files at its top), not the
    # folder the script was started from.
    assert _files(team.dev.data_dir / "mlflow") == {}
    assert list(team.cwd.iterdir()) == []
    names_before, files_before = team.repository_before
    names_after, files_after = _repository_state()
    assert names_after - names_before == set()
    assert files_after == files_before
    print(f"sweep of {len(SWEEP)} variants on {len(WORKERS)} Celery workers: {elapsed:.0f} s "  # shown with -s
          f"(backfill launch to completion; the shared data and judge before it)")


def test_a_celery_worker_killed_in_training_fails_the_run_and_the_retry_resumes_from_the_checkpoint(
    team: Team, celery_run_config: Callable[..., dict[str, Any]],
) -> None:
    # After the sweep test or alone: the data and the judge are needed; an unchanged ingest is reused.
    with team.instance() as instance:
        has_shared = instance.get_latest_materialization_event(dg.AssetKey("mnist_tensors")) is not None
    ops = celery_run_config(seed=LONG_SEED, **LONG_TRAINING)
    assets = ["vae_model"] if has_shared else ["mnist_raw", "mnist_tensors", "vae_model"]
    config = {"ops": {a: ops["ops"][a] for a in assets}, "execution": ops["execution"]}
    team.dev.add_variants(LONG_VARIANT)
    run_id = _launch(team, config, assets, tags={"dagster/partition": LONG_VARIANT})

    with team.instance() as instance:
        pid = wait_for("vae_model to start", lambda: _step_pids(instance, run_id).get("vae_model"), 300, 0.5)
    group = _group(pid)
    assert group in team.workers and pid != group, "vae_model runs in a worker's pool process"
    client = mlflow_client(team.env["MLFLOW_TRACKING_URI"])

    def mlflow_run() -> Any:
        found = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                   filter_string=f"tags.`dagster.run_id` = '{run_id}'")
        return found[0] if found else None

    started = wait_for("the MLflow run of the training", mlflow_run, 120, 0.5)
    checkpoint = team.dev.data_dir / "models" / "vae" / started.data.tags["fingerprint"] / "checkpoint.pt"

    def checkpointed_epoch() -> int | None:
        if checkpoint.is_file():
            return load_checkpoint(checkpoint)["epoch"]
        if team.dev.client().get_run_status(run_id).value in TERMINAL:
            pytest.fail(f"run {run_id} ended before its worker was killed")
        return None

    killed_at = wait_for("the first epoch's checkpoint", checkpointed_epoch, 240, 0.2)
    os.kill(pid, signal.SIGKILL)
    assert killed_at < LONG_TRAINING["epochs"]

    # The worker's parent reports the task lost; the run worker fails the run (not a step failure),
    # so run_retries re-executes it from the failure.
    assert team.dev.wait(run_id, timeout_s=120) == "FAILURE"
    worker_log = team.root / "logs" / f"{team.workers[group]}.log"
    assert f"pid:{pid} exited with 'signal 9 (SIGKILL)'" in worker_log.read_text(errors="replace")
    messages = [e.get("message") or "" for e in team.dev.run_events(run_id)]
    assert "Step vae_model finished without success or failure event. Downstream steps will not execute." in messages
    with team.instance() as instance:
        tags = instance.get_run_by_id(run_id).tags
        assert (tags["dagster/failure_reason"], tags["dagster/will_retry"]) == ("RUN_EXCEPTION", "true")
        retry = wait_for("the automatic retry", lambda: instance.get_run_by_id(run_id).tags.get("dagster/auto_retry_run_id"), 180, 2.0)
        retry_tags = instance.get_run_by_id(retry).tags
    assert (retry_tags["dagster/parent_run_id"], retry_tags["dagster/partition"]) == (run_id, LONG_VARIANT)
    assert team.dev.wait(retry, timeout_s=400) == "SUCCESS"
    with team.instance() as instance:
        assert team.workers.get(_group(_step_pids(instance, retry)["vae_model"])) is not None  # again on a worker
    messages = [e.get("message") or "" for e in team.dev.run_events(retry)]
    assert f"vae: resuming from {checkpoint} (MLflow run {started.info.run_id})" in messages, messages
    (resumed_after,) = [int(m.rsplit(" ", 1)[1]) for m in messages if re.match(r"vae: training \d+ epochs on cpu, resuming after epoch ", m)]
    assert resumed_after >= killed_at
    finished = client.get_run(started.info.run_id)
    assert (finished.info.status, finished.data.tags["dagster.run_id"]) == ("FINISHED", retry)
    assert load_checkpoint(checkpoint)["epoch"] == LONG_TRAINING["epochs"]
