"""The team deployment as the end-to-end tests and the sweep benchmark use it: started by deploy/team/start.sh
on free ports of 127.0.0.1 with all state under one folder, stopped by stop.sh, driven through GraphQL."""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from vae_pipeline_tests.e2e.servers import ARTIFACTS, DagsterDev, Server, child_env, free_port, wait_for, wait_for_location
from vae_pipeline_tests.helpers import REPO_ROOT

START, STOP = REPO_ROOT / "deploy" / "team" / "start.sh", REPO_ROOT / "deploy" / "team" / "stop.sh"
CELERY_RUN_CONFIG = REPO_ROOT / "deploy" / "team" / "celery.yaml"
WORKERS = ("worker-1", "worker-2")
# The sweep: three variants of the tiny config (latent size and beta from the key).
SWEEP = ["z2-b1-bern", "z4-b1-bern", "z4-b4-bern"]
# What every variant shares, materialized once before the sweep (as a team has them already). Inside
# the backfill they would make it plan latent_evaluation as a second run per variant.
SHARED = ["mnist_raw", "mnist_tensors", "digit_classifier"]
PER_VARIANT = ["vae_model", "autoencoder_baseline", "latent_embeddings", "prior_samples", "reconstruction_report",
               "latent_evaluation", "champion_comparison", "version_comparison"]
# Promotion is per dataset: two variants of one backfill that pass their gates race for the alias (the
# second is refused, by design: test_promotion.py). So champion_model runs once, after the backfill.
PROMOTION = ["champion_model"]

LAUNCH_BACKFILL = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message stack } ... on Error { message } } }"""
BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { status runs(limit: 100) { runId status } } ... on PythonError { message } } }"""



def postgres_bin() -> Path | None:
    """The folder of initdb as start.sh finds it (PATH, else Debian's /usr/lib/postgresql/<version>/bin)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


@contextmanager
def team_root(base: Path) -> Iterator[Path]:
    """The folder for all of the deployment's state: `base` (a temporary folder of pytest's), except as root.

    As root, start.sh runs PostgreSQL as the `postgres` user, which must pass through every parent of
    its data folder. pytest makes its folders 0700, and any pytest session that starts meanwhile makes
    /tmp/pytest-of-root 0700 again (pg_ctl could then no longer stop the server), so as root the state
    goes to a folder of its own in the system's temporary folder, removed afterwards.
    """
    if os.geteuid() != 0:
        yield base
        return
    root = Path(tempfile.mkdtemp(prefix="vae-team-"))
    root.chmod(0o711)  # others may pass through, not list
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def read_env(path: Path) -> dict[str, str]:
    """The `export NAME=value` lines that start.sh writes to team.env."""
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = shlex.split(value)[0] if value else ""
    return env


def files_of(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}


def repository_state() -> tuple[set[str], dict[str, tuple[int, int]]]:
    """What a process that ignored the configured roots would change: the repository's top level, data/ and mlruns/."""
    return {p.name for p in REPO_ROOT.iterdir()}, {**files_of(REPO_ROOT / "data"), **files_of(REPO_ROOT / "mlruns")}


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


def run_command(argv: list[str], env: dict[str, str], cwd: Path, log: Path, timeout_s: float) -> subprocess.CompletedProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              timeout=timeout_s, check=False)

@contextmanager
def started_team(root: Path, cwd: Path, mnist_slice_dir: Path, **settings: str) -> Iterator[Team]:
    """start.sh, run from `cwd` with all state under `root` (and `settings`: VAE_TEAM_* variables); stop.sh afterwards, whatever happened."""
    ports = {name: free_port() for name in ("PG", "REDIS", "MLFLOW", "DAGSTER", "CODE")}
    env = child_env(
        VAE_TEAM_ROOT=str(root), **{f"VAE_TEAM_{name}_PORT": str(port) for name, port in ports.items()},
        VAE_PIPELINE_MNIST_DIR=str(mnist_slice_dir),
        # The tests launch every run themselves; automation would start more with the default config.
        VAE_PIPELINE_AUTOMATION="off",
        **settings,
    )
    for name in ("VAE_PIPELINE_DATA_DIR", "DAGSTER_HOME", "DAGSTER_PG_PASSWORD"):  # start.sh's to set
        env.pop(name, None)
    log = ARTIFACTS / "logs" / "team-start.log"
    log.parent.mkdir(parents=True, exist_ok=True)  # before the repository's state is taken
    log.unlink(missing_ok=True)
    repository_before = repository_state()
    started = time.monotonic()
    try:
        result = run_command(["bash", str(START)], env, cwd, log, 400)
        assert result.returncode == 0, f"start.sh failed:\n{log.read_text(errors='replace')[-4000:]}"
        print(f"start.sh: {time.monotonic() - started:.0f} s")  # shown with -s
        team_env = read_env(root / "team.env")
        server = Server("dagster-webserver", None, ports["DAGSTER"], root / "logs" / "dagster-webserver.log")  # type: ignore[arg-type]
        dev = DagsterDev(server, Path(team_env["DAGSTER_HOME"]), Path(team_env["VAE_PIPELINE_DATA_DIR"]), team_env["MLFLOW_TRACKING_URI"])

        wait_for_location(dev, 240, 1.0)
        workers = {int((root / "run" / f"{name}.pid").read_text()): name for name in WORKERS}
        yield Team(root, cwd, team_env, dev, workers, repository_before)
    finally:
        stop_log = ARTIFACTS / "logs" / "team-stop.log"
        stop_log.unlink(missing_ok=True)
        stopped = run_command(["bash", str(STOP)], env, cwd, stop_log, 180)
        if (root / "logs").is_dir():  # CI keeps the servers' logs
            shutil.copytree(root / "logs", ARTIFACTS / "logs" / "team", dirs_exist_ok=True)
        assert stopped.returncode == 0, stop_log.read_text(errors="replace")[-2000:]
        assert not list((root / "run").glob("*.pid")), "stop.sh left processes behind"
        assert not (root / "postgres" / "data" / "postmaster.pid").exists(), "stop.sh left PostgreSQL running"


def launch(team: Team, config: dict[str, Any], assets: list[str], tags: dict[str, str] | None = None) -> str:
    """A run of `assets` through GraphQL, as the UI's Materialize launches it (the implicit asset job)."""
    return team.dev.client().submit_job_execution(
        "__ASSET_JOB", repository_location_name="vae_pipeline", repository_name="__repository__",
        run_config=config, tags=tags or {}, asset_selection=assets,
    )


def launch_backfill(team: Team, variants: list[str], assets: list[str], config: dict[str, Any], title: str) -> str:
    """A backfill of `assets` over `variants` through GraphQL, as the UI launches it; its id."""
    launched = team.dev.graphql(LAUNCH_BACKFILL, {"params": {
        "partitionNames": variants, "assetSelection": [{"path": [a]} for a in assets], "runConfigData": config, "title": title,
    }})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


def backfill_state(team: Team, backfill_id: str) -> dict[str, Any]:
    """The backfill's status and its runs (id and status of each)."""
    found = team.dev.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
    assert found["__typename"] == "PartitionBackfill", found
    return found


def backfill_ended(backfill: dict[str, Any]) -> bool:
    return backfill["status"] not in ("REQUESTED", "CANCELING")


def ended_backfill(team: Team, backfill_id: str) -> dict[str, Any] | None:
    """The backfill's final state once it has ended, else None (a probe for wait_for)."""
    found = backfill_state(team, backfill_id)
    return found if backfill_ended(found) else None


def run_backfill(team: Team, variants: list[str], assets: list[str], config: dict[str, Any], title: str,
                 timeout_s: float = 900) -> tuple[dict[str, Any], float]:
    """A backfill of `assets` over `variants` through GraphQL, as the UI launches it; (its final state, seconds from launch to end)."""
    started = time.monotonic()
    backfill_id = launch_backfill(team, variants, assets, config, title)
    backfill = wait_for(title, lambda: ended_backfill(team, backfill_id), timeout_s, 2.0,
                        log=team.root / "logs" / "dagster-daemon.log")
    return backfill, time.monotonic() - started
