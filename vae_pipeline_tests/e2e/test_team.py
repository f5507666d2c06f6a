"""The team deployment, started by its own script: PostgreSQL, Redis, MLflow, two Celery workers, Dagster.

`deploy/team/start.sh` starts everything on free ports of 127.0.0.1 with all state under a
temporary folder (VAE_TEAM_ROOT); `deploy/team/stop.sh` stops it at the end. The tests use it as a
team would: add variants and launch a sweep backfill through the webserver's GraphQL API with the
run config of deploy/team/celery.yaml, then read the results back from where the team reads them
(the MLflow server's API, the Dagster database, the data folder).

This is the suite's one sweep of several variants and its one whole graph on Celery: every asset of
vae_pipeline_job runs as a task of the two workers (the shared assets, the backfill's per-variant
assets and gates, one promotion), and the sweep's results are checked here (each variant its own
model version and history, the comparison table measured alike, beta lowering the rate). A Celery worker killed in the
middle of training is the fault injected: its run fails, the daemon retries it, and the retry
resumes training from the checkpoint.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import psycopg2
import pytest
import yaml

from vae_pipeline.core.model.checkpoint import load_checkpoint
from vae_pipeline_tests.e2e.servers import TERMINAL, group_commands, manifest, wait_for
from vae_pipeline_tests.e2e.team import (
    CELERY_RUN_CONFIG,
    PER_VARIANT,
    PROMOTION,
    SHARED,
    SWEEP,
    WORKERS,
    Team,
    backfill_ended,
    backfill_state,
    ended_backfill,
    files_of,
    launch,
    launch_backfill,
    postgres_bin,
    repository_state,
    started_team,
    team_root,
)
from vae_pipeline_tests.helpers import PIPELINE_ASSETS, mlflow_client

pytestmark = pytest.mark.slow

# Killed during training (1-3 s an epoch on the slice): long enough to be killed after its first
# epoch's checkpoint (the test polls every 0.2 s), short enough that the retry finishes in seconds.
LONG_VARIANT = "z8-b1-bern"
LONG_TRAINING = {"hidden_dims": [256], "epochs": 8, "batch_size": 50, "device": "cpu"}
LONG_SEED = 78

# A worker lost whole: its step comes back only when Redis hands the unacknowledged task out again,
# VAE_TEAM_STEP_TIME_LIMIT + VAE_TEAM_REDELIVERY_MARGIN seconds after it was delivered (start.sh), found
# by a worker's search for such tasks every UNACKED_RESTORE_S. The module's deployment runs with a
# small limit, so that this bound is short: every step of this module takes seconds (the longest
# seen, a worker's first step, which imports the code, took 40 s on two cores under load 11).
STEP_TIME_LIMIT_S, REDELIVERY_MARGIN_S, UNACKED_RESTORE_S = 120, 10, 10
LOST_VARIANT = "z6-b1-bern"
LOST_SEED = 79

@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, mnist_slice_dir: Path) -> Iterator[Team]:
    if postgres_bin() is None:
        pytest.fail("PostgreSQL's initdb not found: apt-get install postgresql (.ci/run installs it)")
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not found: apt-get install redis-server (.ci/run installs it)")
    with team_root(tmp_path_factory.mktemp("team")) as root, \
            started_team(root, tmp_path_factory.mktemp("team_cwd"), mnist_slice_dir, VAE_TEAM_STEP_TIME_LIMIT=str(STEP_TIME_LIMIT_S),
                         VAE_TEAM_REDELIVERY_MARGIN=str(REDELIVERY_MARGIN_S),
                         # One process serves MLflow's API (two by default, each importing MLflow): this module's
                         # requests come a few at a time, and the suite's other MLflow server has one too.
                         VAE_TEAM_MLFLOW_WORKERS="1") as started:
        yield started


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


def _training_run(team: Team, config: dict[str, Any], variant: str) -> str:
    """A run that trains `variant`'s VAE on the workers (after the sweep test or alone: the data and the judge are
    needed, and an unchanged ingest is reused, so only vae_model runs when they are there)."""
    with team.instance() as instance:
        has_shared = instance.get_latest_materialization_event(dg.AssetKey("mnist_tensors")) is not None
    assets = ["vae_model"] if has_shared else ["mnist_raw", "mnist_tensors", "vae_model"]
    team.dev.add_variants(variant)
    return launch(team, {"ops": {a: config["ops"][a] for a in assets}, "execution": config["execution"]}, assets,
                  tags={"dagster/partition": variant})


def _first_checkpoint(team: Team, run_id: str) -> tuple[Any, Path, int]:
    """(the training's MLflow run, its checkpoint, the epoch checkpointed) once training has saved its first epoch."""
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

    return started, checkpoint, wait_for("the first epoch's checkpoint", checkpointed_epoch, 240, 0.2)


def test_one_code_server_serves_the_daemon_and_the_ui_and_mlflow_starts_no_job_consumers(team: Team) -> None:
    groups = {name: group_commands(int((team.root / "run" / f"{name}.pid").read_text()))
              for name in ("dagster-code-server", "dagster-daemon", "dagster-webserver", "mlflow")}
    assert any("vae_pipeline.definitions" in c for c in groups["dagster-code-server"]), groups["dagster-code-server"]
    for name in ("dagster-daemon", "dagster-webserver"):  # neither starts a code server of its own
        assert not [c for c in groups[name] if " api grpc" in c or "code-server" in c], (name, groups[name])
    assert groups["mlflow"] and not [c for c in groups["mlflow"] if "huey" in c], groups["mlflow"]


def test_a_sweep_backfill_runs_on_two_celery_workers_into_postgres_and_mlflow(
    team: Team, celery_run_config: Callable[..., dict[str, Any]],
) -> None:
    config = celery_run_config()
    shared = launch(team, config, SHARED)
    assert team.dev.wait(shared, timeout_s=400) == "SUCCESS", team.dev.run_events(shared)[-20:]

    # The sweep as a team launches it from the UI: add the variants, then backfill those partitions.
    team.dev.add_variants(*SWEEP)
    started = time.monotonic()
    backfill_id = launch_backfill(team, SWEEP, [*PER_VARIANT, "sweep_comparison"], config, "sweep on celery")

    def runs_ended() -> dict[str, Any] | None:
        """The backfill once its runs (one per variant, then the sweep table's) have ended, or once it has."""
        found = backfill_state(team, backfill_id)
        ended = len(found["runs"]) == len(SWEEP) + 1 and all(r["status"] in TERMINAL for r in found["runs"])
        return found if ended or backfill_ended(found) else None

    daemon_log = team.root / "logs" / "dagster-daemon.log"
    runs = [r["runId"] for r in wait_for("the sweep backfill's runs", runs_ended, 900, 2.0, log=daemon_log)["runs"]]
    # Every variant passed its gates against no champion; the first of the sweep is promoted. Side by side
    # with it, the sweep table asked for again with nothing changed (checked below: reused, not computed
    # again); promotion moves an alias and writes no input of the table, so the two runs are independent.
    # Both are launched while the backfill daemon's next tick (every 30 s) has yet to declare the backfill done.
    promoted = launch(team, config, PROMOTION, tags={"dagster/partition": SWEEP[0]})
    again = launch(team, config, ["sweep_comparison"])
    backfill = wait_for("the sweep backfill", lambda: ended_backfill(team, backfill_id), 120, 2.0, log=daemon_log)
    elapsed = time.monotonic() - started
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    assert [r["runId"] for r in backfill["runs"]] == runs
    assert all(r["status"] == "SUCCESS" for r in backfill["runs"]), backfill["runs"]
    assert team.dev.wait(promoted, timeout_s=300) == "SUCCESS", team.dev.run_events(promoted)[-20:]
    assert team.dev.wait(again, timeout_s=300) == "SUCCESS", team.dev.run_events(again)[-20:]

    with team.instance() as instance:
        # (d) The runs are in PostgreSQL: the instance every process opens is, and its runs table holds them.
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        by_partition = {instance.get_run_by_id(r).tags.get("dagster/partition"): r for r in runs}
        assert sorted(k for k in by_partition if k) == sorted(SWEEP) and None in by_partition, by_partition
        assert len(runs) == len(SWEEP) + 1, "one run per variant and one for the sweep table"
        pids = {run_id: _step_pids(instance, run_id) for run_id in [shared, *runs, promoted]}
        hosts = {run_id: {e.event_specific_data.metadata["Celery worker"].value.split("@")[0]
                          for e in _events(instance, run_id, dg.DagsterEventType.ENGINE_EVENT)
                          if e.message.endswith("in celery worker")} for run_id in [shared, *runs, promoted]}
        materialized = {e.asset_key.to_user_string() for run_id in [shared, *runs, promoted]
                        for e in _events(instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)}
        reports = {variant: instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("reconstruction_report"), asset_partitions=[variant]), limit=10).records
            for variant in SWEEP}
    assert materialized == PIPELINE_ASSETS  # the whole job, each step a Celery task (below)
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

    # Each variant's settings reached its run; each variant's history is its own: one report per variant,
    # none naming a "previous version" (another variant's model is not one).
    params = {variant: client.get_run(version.run_id).data.params for variant, version in versions.items()}
    assert {v: (params[v]["model.latent_dim"], params[v]["train.beta"]) for v in SWEEP} == {
        "z2-b1-bern": ("2", "1.0"), "z4-b1-bern": ("4", "1.0"), "z4-b4-bern": ("4", "4.0")}
    for variant, records in reports.items():
        assert len(records) == 1 and records[0].partition_key == variant
        assert "previous_version" not in records[0].asset_materialization.metadata
    assert int(client.get_model_version_by_alias("vae-mnist", "champion").version) == int(versions[SWEEP[0]].version)

    # (c) The sweep table holds every variant, measured alike, in key order; beta buys a lower rate.
    table = pd.read_parquet(team.dev.data_dir / "sweeps" / "vae-mnist" / "comparison.parquet")
    assert list(table["variant"]) == SWEEP and table["comparable"].all(), table
    assert list(table["latent_dim"]) == [2, 4, 4] and list(table["beta"]) == [1.0, 1.0, 4.0]
    assert table[["test_iwae_nll", "test_rate", "test_distortion", "test_recon_nll_at_mu", "probe_accuracy",
                  "knn_accuracy", "prior_fd", "midpoint_fd"]].notna().all().all()
    by = table.set_index("variant")
    assert by.loc["z4-b4-bern", "test_rate"] < by.loc["z4-b1-bern", "test_rate"]
    # R + D is the negative ELBO, which the IWAE bound tightens: above the IWAE NLL for every variant.
    assert ((table["test_rate"] + table["test_distortion"]) > table["test_iwae_nll"]).all(), table
    (sweep_run,) = [r for r in runs if by_partition.get(None) == r]
    comparison = manifest(team.dev.data_dir, "sweep_comparison", sweep_run, variant=None)
    mlflow_run = client.get_run(comparison["mlflow_run_id"])
    assert mlflow_run.data.tags["role"] == "sweep_comparison"
    assert {a.path for a in client.list_artifacts(mlflow_run.info.run_id, "sweep")} == {
        "sweep/comparison.parquet", "sweep/rate_distortion.png"}
    # Nothing changed: the comparison is reused, not computed again.
    with team.instance() as instance:
        (event,) = _events(instance, again, dg.DagsterEventType.ASSET_MATERIALIZATION)
    assert event.event_specific_data.materialization.metadata["reused"].value is True

    # (e) Nothing outside the configured roots: not the embedded MLflow store in the data folder (its
    # folder may be there, empty), not the repository (data/, mlruns/, new files at its top), not the
    # folder the script was started from.
    assert files_of(team.dev.data_dir / "mlflow") == {}
    assert list(team.cwd.iterdir()) == []
    names_before, files_before = team.repository_before
    names_after, files_after = repository_state()
    assert names_after - names_before == set()
    assert files_after == files_before
    print(f"sweep of {len(SWEEP)} variants on {len(WORKERS)} Celery workers: {elapsed:.0f} s "  # shown with -s
          f"(backfill launch to completion; the shared data and judge before it)")


def test_a_celery_worker_killed_in_training_fails_the_run_and_the_retry_resumes_from_the_checkpoint(
    team: Team, celery_run_config: Callable[..., dict[str, Any]],
) -> None:
    run_id = _training_run(team, celery_run_config(seed=LONG_SEED, **LONG_TRAINING), LONG_VARIANT)
    with team.instance() as instance:
        pid = wait_for("vae_model to start", lambda: _step_pids(instance, run_id).get("vae_model"), 300, 0.5)
    group = _group(pid)
    assert group in team.workers and pid != group, "vae_model runs in a worker's pool process"
    started, checkpoint, killed_at = _first_checkpoint(team, run_id)
    os.kill(pid, signal.SIGKILL)
    assert killed_at < LONG_TRAINING["epochs"]
    client = mlflow_client(team.env["MLFLOW_TRACKING_URI"])

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



def test_a_celery_worker_lost_whole_mid_step_has_the_step_run_again_on_the_other_worker(
    team: Team, celery_run_config: Callable[..., dict[str, Any]],
) -> None:
    """kill -9 of a worker's main process and its pool at once (its machine gone): nothing reports the task, the
    run worker waits for its result. Acknowledged late, the task is handed to the other worker once the visibility
    timeout has passed, and the same run ends. Last in the module: one worker is left."""
    run_id = _training_run(team, celery_run_config(seed=LOST_SEED, **LONG_TRAINING), LOST_VARIANT)
    with team.instance() as instance:
        pid = wait_for("vae_model to start", lambda: _step_pids(instance, run_id).get("vae_model"), 300, 0.5)
    group = _group(pid)
    assert group in team.workers and pid != group, "vae_model runs in a worker's pool process"
    (other,) = set(team.workers) - {group}
    started, checkpoint, killed_at = _first_checkpoint(team, run_id)
    os.killpg(group, signal.SIGKILL)
    wait_for("the lost worker's processes to be gone", lambda: _group(group) is None and _group(pid) is None, 30, 0.2)

    # The task was delivered before the kill, so Redis hands it out again within the limit plus the margin, found at
    # the next search for unacknowledged tasks; a few seconds more for the other worker to take it and report it.
    redelivered_within = STEP_TIME_LIMIT_S + REDELIVERY_MARGIN_S + UNACKED_RESTORE_S + 30

    def run_again() -> list[int] | None:
        with team.instance() as instance:
            starts = [e.pid for e in _events(instance, run_id, dg.DagsterEventType.STEP_START) if e.step_key == "vae_model"]
        return starts[1:] or None

    (again,) = wait_for("vae_model run again on the other worker", run_again, redelivered_within, 1.0,
                        log=team.root / "logs" / f"{team.workers[other]}.log")
    assert _group(again) == other, (again, _group(again), team.workers)
    # The same run ends, with success, within the step's own limit: no failure, no retry run, training resumed.
    assert team.dev.wait(run_id, timeout_s=STEP_TIME_LIMIT_S + 30) == "SUCCESS", team.dev.run_events(run_id)[-20:]
    with team.instance() as instance:
        assert "dagster/auto_retry_run_id" not in instance.get_run_by_id(run_id).tags
    messages = [e.get("message") or "" for e in team.dev.run_events(run_id)]
    assert f"vae: resuming from {checkpoint} (MLflow run {started.info.run_id})" in messages, messages
    (resumed_after,) = [int(m.rsplit(" ", 1)[1]) for m in messages if re.match(r"vae: training \d+ epochs on cpu, resuming after epoch ", m)]
    assert resumed_after >= killed_at
    finished = mlflow_client(team.env["MLFLOW_TRACKING_URI"]).get_run(started.info.run_id)
    assert (finished.info.status, finished.data.tags["dagster.run_id"]) == ("FINISHED", run_id)
    assert load_checkpoint(checkpoint)["epoch"] == LONG_TRAINING["epochs"]
