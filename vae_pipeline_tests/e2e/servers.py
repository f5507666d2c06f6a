"""Real servers for the end-to-end tests: `mlflow server` and `dagster dev` (webserver + daemon) on 127.0.0.1.

Each server runs in its own process group with its logs in a file; teardown always terminates the
group (SIGTERM, then SIGKILL). Every wait is bounded. Neither server is given a host: the tests
check that the defaults bind the loopback interface only. The fixtures that start them are in
conftest.py; this module holds what tests, fixtures and benchmarks call.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from vae_pipeline.defs.variants import VARIANTS
from vae_pipeline_tests.helpers import REPO_ROOT
from vae_pipeline_tests.variants import TINY_VARIANT

BIN = Path(sys.executable).parent
ARTIFACTS = REPO_ROOT / "test-artifacts"  # git-ignored; CI keeps screenshots and server logs here
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
RUNS_IN_PROGRESS = """{ runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING]}) {
  ... on Runs { results { runId } } } }"""
REPOSITORY = {"repositoryLocationName": "vae_pipeline", "repositoryName": "__repository__"}
ADD_PARTITION = """mutation($repo: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: $name, partitionKey: $key) {
    __typename ... on Error { message } } }"""


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child, without the MLflow URIs that tests before it left.

    mlflow.set_tracking_uri() also sets $MLFLOW_TRACKING_URI, so after any in-process test the
    variable names that test's store; a child must get its store from its arguments instead.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float, interval_s: float = 0.5, log: Path | None = None) -> Any:
    """Poll `probe` until it returns something truthy; fail with the log's tail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (requests.RequestException, OSError):
            value = None
        if value:
            return value
        time.sleep(interval_s)
    tail = log.read_text(errors="replace")[-4000:] if log and log.is_file() else ""
    pytest.fail(f"{what} not ready after {timeout_s}s\n{tail}")


@dataclass
class Server:
    """A server process (and its children) in its own process group."""

    name: str
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout_s: float = 20) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=timeout_s)
                return
            except subprocess.TimeoutExpired:
                continue


def start_server(name: str, argv: list[str], port: int, log: Path, env: dict[str, str]) -> Server:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=child_env(**env), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    return Server(name, process, port, log)


def start_mlflow_server(root: Path, port: int, log_name: str) -> Server:
    """`mlflow server` with a sqlite backend and its artifacts under `root`, one worker, without MLflow's job execution.

    The pipeline runs no MLflow jobs (GenAI scoring, trace archival); with them on, every start of a
    server also starts seven job consumer processes that each import MLflow (about 9 s of CPU on two
    cores) and then poll. deploy/team/start.sh turns them off the same way.
    """
    return start_server(
        "mlflow",
        [str(BIN / "mlflow"), "server", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        port, ARTIFACTS / "logs" / f"{log_name}.log", env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )


def listening_addresses(server: Server) -> set[str]:
    """The local IP addresses that the server's process group listens on (TCP)."""
    import psutil

    group = {p.pid for p in _group_processes(server.process.pid)}
    return {c.laddr.ip for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.pid in group}


def group_commands(group: int) -> list[str]:
    """The command lines of the processes in process group `group` (a server started in a session of its own)."""
    import psutil

    commands = []
    for process in _group_processes(group):
        try:
            commands.append(" ".join(process.cmdline()))
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return commands


def _group_processes(group: int) -> list:  # of psutil.Process (psutil is imported where used)
    """The live processes of process group `group`."""
    import psutil

    return [p for p in psutil.process_iter() if _pgid(p.pid) == group]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@dataclass
class DagsterDev:
    server: Server
    home: Path
    data_dir: Path
    tracking_uri: str

    @property
    def url(self) -> str:
        return self.server.url

    def graphql(self, query: str, variables: dict[str, Any] | None = None, timeout_s: float = 60) -> dict[str, Any]:
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=timeout_s)
        assert response.ok, f"GraphQL {response.status_code}: {response.text[:2000]}"
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def client(self):  # noqa: ANN201 - dagster_graphql.DagsterGraphQLClient
        from dagster_graphql import DagsterGraphQLClient

        return DagsterGraphQLClient("127.0.0.1", port_number=self.server.port, timeout=60)

    def add_variants(self, *keys: str) -> None:
        """Make `keys` partitions of the model variants, as the UI's "Add partition" does (those there already are kept)."""
        for key in keys:
            result = self.graphql(ADD_PARTITION, {"repo": REPOSITORY, "name": VARIANTS.name, "key": key})["addDynamicPartition"]
            assert result["__typename"] in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"), result

    def variants(self) -> list[str]:
        """The partition keys the UI offers for vae_model: the variants, in the order they were added."""
        data = self.graphql("""{ assetNodeOrError(assetKey: {path: ["vae_model"]}) { ... on AssetNode { partitionKeys } } }""")
        return data["assetNodeOrError"]["partitionKeys"]

    def launch(
        self, config: dict[str, Any], job: str = "vae_pipeline_job", tags: dict[str, str] | None = None,
        assets: list[str] | None = None, variant: str = TINY_VARIANT,
    ) -> str:
        """Launch a run of `job` (or of its `assets`) for one variant through the GraphQL API (the dagster-graphql
        client); returns its id. The variant must be a partition already (`add_variants`)."""
        return self.client().submit_job_execution(
            job, repository_location_name="vae_pipeline", repository_name="__repository__", run_config=config,
            tags={"dagster/partition": variant, **(tags or {})}, asset_selection=assets,
        )

    def wait(self, run_id: str, timeout_s: float = 300) -> str:
        """Wait for a run to end; returns SUCCESS, FAILURE or CANCELED."""
        client = self.client()
        return wait_for(
            f"run {run_id}", lambda: (s := client.get_run_status(run_id).value) in TERMINAL and s, timeout_s, 1.0, log=self.server.log
        )

    def wait_idle(self, timeout_s: float = 600) -> None:
        """Wait until no run is queued or in progress (a test that snapshots the data folder must not see the
        writes of a run that an earlier test left behind, such as a retry still training after a failure)."""
        wait_for("no run in progress", lambda: not self.graphql(RUNS_IN_PROGRESS)["runsOrError"]["results"], timeout_s, 1.0,
                 log=self.server.log)

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        data = self.graphql(
            """query($runId: ID!) { logsForRun(runId: $runId, limit: 5000) {
                 __typename ... on EventConnection { events { __typename
                   ... on MessageEvent { message }
                   ... on StepEvent { stepKey }
                   ... on ExecutionStepFailureEvent { error { message } }
                   ... on RunFailureEvent { error { message } } } } } }""",
            {"runId": run_id},
        )
        return data["logsForRun"]["events"]


def manifest(data_dir: Path, asset: str, run_id: str, variant: str | None = TINY_VARIANT) -> dict[str, Any]:
    """What `asset` handed downstream in run `run_id` (its IO manager's JSON record): of partition `variant`,
    or of an unpartitioned asset (mnist_tensors, digit_classifier, sweep_comparison) with variant=None."""
    folder = data_dir / "manifests" / asset
    return json.loads(((folder / variant if variant else folder) / f"{run_id}.json").read_text())


def wait_for_location(dev: DagsterDev, timeout_s: float, interval_s: float = 0.5) -> None:
    """Wait until the webserver has loaded the code location `vae_pipeline`; fail with its log if loading failed."""

    def location_loaded() -> bool:
        entries = dev.graphql(LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
        loaded = [e for e in entries if e["name"] == "vae_pipeline" and e["loadStatus"] == "LOADED"]
        if loaded and loaded[0]["locationOrLoadError"]["__typename"] != "RepositoryLocation":
            pytest.fail(f"code location failed to load:\n{dev.server.log.read_text(errors='replace')[-4000:]}")
        return bool(loaded)

    wait_for("code location vae_pipeline", location_loaded, timeout_s, interval_s, log=dev.server.log)


LOCATION_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename } } } } }"""
