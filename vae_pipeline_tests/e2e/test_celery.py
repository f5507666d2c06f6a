"""The Celery executor with real processes: Redis as broker, two Celery workers, the whole graph.

`dg launch` runs the tiny whole graph (the tiny variant's partition, added to the instance first
with `python -m vae_pipeline.variants_cli add`, as scripts/pipeline.sh does) with
`execution: {config: {celery: ...}}` in an instance and
data folder of its own (the instance config the scripts create, MLflow's default sqlite store under
the data folder): the session's `dagster dev` keeps its registry and champion to the other tests.
Its process only orchestrates: every step is a Celery task that one of two workers
(`dagster-celery worker start`, one pool process each) runs, with the run's environment. Each
step's STEP_START event carries the pid of the process that ran it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from vae_pipeline_tests.helpers import REPO_ROOT
from vae_pipeline_tests.e2e.servers import ARTIFACTS, BIN, Server, child_env, free_port, start_server, wait_for
from vae_pipeline_tests.variants import TINY_VARIANT

pytestmark = pytest.mark.slow

WORKERS = ("worker-a", "worker-b")


def _redis_ping(port: int) -> bool:
    import redis

    return bool(redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).ping())


@pytest.fixture
def redis_broker(tmp_path: Path) -> Iterator[str]:
    """`redis-server` on a free port of 127.0.0.1, nothing persisted; its URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server not found: apt-get install redis-server (.ci/run installs it)")
    port = free_port()
    server = start_server(
        "redis",
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        port, ARTIFACTS / "logs" / "celery-redis.log", env={},
    )
    try:
        wait_for("redis-server", lambda: _redis_ping(port), 30, 0.2, log=server.log)
        yield f"redis://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def run_env(tmp_path: Path, mnist_slice_dir: Path) -> dict[str, str]:
    """The environment of the launch and of the workers alike: one instance, one data folder, one code location."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")  # the instance the scripts create
    with dg.DagsterInstance.from_config(str(home)):  # its sqlite storage, before two workers race to create it
        pass
    venv = Path(sys.prefix)
    return {
        "DAGSTER_HOME": str(home),
        "VAE_PIPELINE_DATA_DIR": str(tmp_path / "data"),
        "VAE_PIPELINE_MNIST_DIR": str(mnist_slice_dir),
        "VAE_PIPELINE_AUTOMATION": "off",
        "VIRTUAL_ENV": str(venv),  # as `source .venv/bin/activate`: dg expects it, dagster-celery runs `celery` from PATH
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


@pytest.fixture
def celery_executor_config(redis_broker: str) -> dict[str, str]:
    return {"broker": f"{redis_broker}/0", "backend": f"{redis_broker}/1"}


@pytest.fixture
def workers(tmp_path: Path, run_env: dict[str, str], celery_executor_config: dict[str, str]) -> Iterator[dict[str, Server]]:
    """Two `dagster-celery worker start` processes on the broker, one pool process each, by name."""
    # The worker's -y file is the celery executor's own config block (broker, backend), not the run config.
    worker_yaml = tmp_path / "celery.yaml"
    worker_yaml.write_text(yaml.safe_dump({"execution": {"config": celery_executor_config}}))
    started: dict[str, Server] = {}
    try:
        for name in WORKERS:
            started[name] = start_server(
                name,
                [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", str(worker_yaml),
                 "-n", name, "--", "--concurrency", "1"],
                0, ARTIFACTS / "logs" / f"celery-{name}.log", run_env,
            )
        for server in started.values():  # celery logs "<name>@<host> ready." once it consumes
            wait_for(f"celery {server.name}", lambda s=server: " ready." in s.log.read_text(errors="replace"), 120, log=server.log)
        yield started
    finally:
        for server in started.values():
            _stop_group(server)


def _stop_group(server: Server, timeout_s: float = 30) -> None:
    """Stop the worker and wait for its whole group: `celery` outlives `dagster-celery` (its parent) by a warm shutdown."""
    server.stop()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(server.process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(server.process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_whole_graph_on_two_celery_workers(
    run_env: dict[str, str], workers: dict[str, Server], celery_executor_config: dict[str, str],
    tiny_config: Callable[..., dict[str, Any]],
) -> None:
    config = {**tiny_config(seed=0), "execution": {"config": {"celery": celery_executor_config}}}
    log = ARTIFACTS / "logs" / "celery-launch.log"
    with open(log, "wb") as out:
        added = subprocess.run(
            [sys.executable, "-m", "vae_pipeline.variants_cli", "add", TINY_VARIANT],
            cwd=REPO_ROOT, env=child_env(**run_env), stdout=out, stderr=subprocess.STDOUT, timeout=120, check=False,
        )
    assert added.returncode == 0, log.read_text(errors="replace")[-4000:]
    started = time.monotonic()
    with open(log, "ab") as out:
        launch = subprocess.run(
            [str(BIN / "dg"), "launch", "--job", "vae_pipeline_job", "--partition", TINY_VARIANT, "--config-json", json.dumps(config)],
            cwd=REPO_ROOT, env=child_env(**run_env), stdout=out, stderr=subprocess.STDOUT, timeout=300, check=False,
        )
    elapsed = time.monotonic() - started
    assert launch.returncode == 0, log.read_text(errors="replace")[-4000:]

    with dg.DagsterInstance.from_config(run_env["DAGSTER_HOME"]) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == TINY_VARIANT
        events = [e.dagster_event for e in instance.all_logs(run.run_id) if e.dagster_event is not None]
    starts = {e.step_key: e.pid for e in events if e.event_type == dg.DagsterEventType.STEP_START}
    materialized = {e.asset_key.to_user_string() for e in events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION}
    on_worker = {
        e.step_key: e.event_specific_data.metadata["Celery worker"].value
        for e in events
        if e.event_type == dg.DagsterEventType.ENGINE_EVENT and e.message.endswith("in celery worker")
    }

    from vae_pipeline.definitions import defs

    assets = {k.to_user_string() for k in defs.resolve_job_def("vae_pipeline_job").asset_layer.asset_graph.materializable_asset_keys}
    assert materialized == assets
    assert set(starts) == set(on_worker), "every step went through a Celery task"
    # Each step ran in a pool process of one of the two workers (its process group), not in dg's
    # process, and both workers took steps.
    groups = {server.process.pid: name for name, server in workers.items()}
    ran_in = {step: groups.get(_group(pid)) for step, pid in starts.items()}
    assert None not in ran_in.values(), {step: (starts[step], where) for step, where in ran_in.items()}
    assert len(set(starts.values())) >= 2 and set(ran_in.values()) == set(WORKERS), ran_in
    assert {host.split("@")[0] for host in on_worker.values()} == set(WORKERS), on_worker
    print(f"celery run {run.run_id}: {elapsed:.0f} s; steps by pid: "  # shown with -s
          f"{ {pid: sorted(s for s in starts if starts[s] == pid) for pid in set(starts.values())} }")
