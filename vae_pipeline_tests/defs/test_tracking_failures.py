"""MLflow failures during a step, bounded and named: a full store or artifact folder, a server that stopped answering.

Through the training asset, the full disk is simulated where the library meets the OS: sqlite
refuses a statement with its own error ("database or disk is full"), which SQLAlchemy and MLflow
wrap as they do a real one; an artifact copy raises ENOSPC. Where a tmpfs can be mounted (root), a
really full one checks the same messages. The dying server is e2e/test_tracking_server_death.py.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from vae_pipeline.core.model.checkpoint import load_checkpoint
from vae_pipeline.defs.resources import default_resources
from vae_pipeline_tests.e2e.servers import free_port
from vae_pipeline_tests.helpers import TINY_TRAINING, materialize_training, mlflow_client, tracking_uri

HTTP_VARIABLES = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "MLFLOW_HTTP_REQUEST_TIMEOUT")


@pytest.fixture(autouse=True)
def _no_tracking_uri_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    for name in HTTP_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def train(data_dir: Path, source_dir: Path) -> dg.ExecuteInProcessResult:
    """Ingest the slice and train the tiny VAE into `data_dir` (MLflow's embedded store there)."""
    return materialize_training(data_dir, source_dir)


def failure_of(result: dg.ExecuteInProcessResult) -> str:
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "vae_model"
    return str(failure.event_specific_data.error)


def training_run(data_dir: Path):  # noqa: ANN201 - mlflow.entities.Run
    client = mlflow_client(tracking_uri(data_dir))
    (run,) = client.search_runs([client.get_experiment_by_name("vae-pipeline").experiment_id])
    return run


@contextmanager
def full_store(db: Path, *refused: str) -> Iterator[None]:
    """The sqlite file `db` answers "database or disk is full" to statements that start with one of `refused`."""

    def refuse(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001 - SQLAlchemy's hook
        if Path(conn.engine.url.database or "") == db and statement.lstrip().upper().startswith(refused):
            raise sqlite3.OperationalError("database or disk is full")

    event.listen(Engine, "before_cursor_execute", refuse)
    try:
        yield
    finally:
        event.remove(Engine, "before_cursor_execute", refuse)


class TestFullDiskUnderMlflow:
    def test_a_full_store_names_the_file_and_the_fix_and_ends_the_run_failed(self, tmp_path: Path, mnist_slice_dir: Path) -> None:
        # Before: "sqlite3.OperationalError: database or disk is full" wrapped by MLflow, no path, no fix.
        data_dir = tmp_path / "data"
        db = data_dir / "mlflow" / "mlflow.db"
        with full_store(db, "INSERT INTO METRICS"):
            result = train(data_dir, mnist_slice_dir)
        assert not result.success
        message = failure_of(result)
        assert f"could not write {db}: database or disk is full" in message
        assert "$VAE_PIPELINE_DATA_DIR can point the data folder at another disk" in message
        (folder,) = (data_dir / "models" / "vae").iterdir()
        assert load_checkpoint(folder / "checkpoint.pt")["epoch"] == 1  # epoch 1's metrics were the first refused
        assert f"The checkpoint of epoch 1 of {TINY_TRAINING['epochs']} is kept in {folder / 'checkpoint.pt'}" in message
        run = training_run(data_dir)
        assert f"The MLflow run {run.info.run_id} is marked FAILED." in message
        assert run.info.status == "FAILED"

    def test_a_run_that_cannot_be_ended_either_is_said_to_show_running(self, tmp_path: Path, mnist_slice_dir: Path) -> None:
        data_dir = tmp_path / "data"
        db = data_dir / "mlflow" / "mlflow.db"
        with full_store(db, "INSERT INTO METRICS", "UPDATE RUNS"):
            result = train(data_dir, mnist_slice_dir)
        message = failure_of(result)
        assert f"could not write {db}: database or disk is full" in message
        run = training_run(data_dir)
        assert (f"The MLflow run {run.info.run_id} could not be marked FAILED either (database or disk is full), "
                "so it still shows RUNNING.") in message
        assert run.info.status == "RUNNING"

    def test_a_full_artifact_folder_names_it_and_ends_the_run_failed(
        self, tmp_path: Path, mnist_slice_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Before: "[Errno 28] No space left on device" with no path, and the run left as MLflow's exit handler left it.
        real = shutil.copyfileobj

        def no_room_for_checkpoints(source, target, *args, **kwargs) -> None:  # noqa: ANN001 - shutil's signature
            if str(getattr(source, "name", "")).endswith("checkpoint.pt"):  # MLflow copying the checkpoint into its store
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(source, target, *args, **kwargs)

        monkeypatch.setattr(shutil, "copyfileobj", no_room_for_checkpoints)
        data_dir = tmp_path / "data"
        result = train(data_dir, mnist_slice_dir)
        message = failure_of(result)
        run = training_run(data_dir)
        artifacts = data_dir / "mlflow" / "artifacts" / run.info.run_id / "artifacts"
        assert f"could not write {artifacts}: No space left on device" in message
        assert "$VAE_PIPELINE_DATA_DIR" in message
        (folder,) = (data_dir / "models" / "vae").iterdir()
        epochs = TINY_TRAINING["epochs"]
        assert f"Training finished: its checkpoint (epoch {epochs} of {epochs}) is kept in {folder / 'checkpoint.pt'}" in message
        assert f"The MLflow run {run.info.run_id} is marked FAILED." in message
        assert run.info.status == "FAILED"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MB file system (tmpfs), to be filled up; skipped where mounting one is not allowed (it needs root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = shutil.which("mount")
    mounted = subprocess.run([mount, "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True, text=True) if mount else None
    if mounted is None or mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip() if mounted else 'no mount command'}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path) -> None:
    with open(disk / "filler", "wb") as out:
        try:
            while True:
                out.write(bytes(1 << 16))
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


class TestReallyFullDisk:
    def test_the_store_and_the_artifact_folder_are_named_and_a_run_that_cannot_end_is_said_to_show_running(
        self, small_disk: Path, tmp_path: Path
    ) -> None:
        from mlflow.entities import Metric

        from vae_pipeline.core.atomic import WriteError
        from vae_pipeline.defs.storage.folder import PipelineStorage
        from vae_pipeline.defs.tracking.failures import mlflow_writes
        from vae_pipeline.defs.tracking.resource import MlflowTracking

        data_dir = small_disk / "data"
        tracking = MlflowTracking(storage=PipelineStorage(data_dir=str(data_dir)))
        client = tracking.activate()
        run_id = client.create_run(tracking.experiment_id(client)).info.run_id
        fill(small_disk)

        with pytest.raises(WriteError) as caught, mlflow_writes(tracking, "training of vae 0123") as writes:
            writes.owns(run_id)
            for step in range(50):  # sqlite may find room in a page it has: write until it has none
                client.log_batch(run_id, metrics=[Metric(f"m{i}", 1.0, 0, step) for i in range(200)])
        message = str(caught.value)
        assert f"could not write {data_dir / 'mlflow' / 'mlflow.db'}: database or disk is full" in message
        assert "MLflow was writing it during training of vae 0123" in message
        # Ending the run is a write to the same full store: the message says it failed, as it did.
        assert f"The MLflow run {run_id} could not be marked FAILED either (database or disk is full), so it still shows RUNNING." in message
        assert client.get_run(run_id).info.status == "RUNNING"

        checkpoint = tmp_path / "checkpoint.pt"
        checkpoint.write_bytes(os.urandom(1 << 20))
        with pytest.raises(WriteError) as caught, mlflow_writes(tracking, "training of vae 0123", run_id=run_id):
            client.log_artifact(run_id, str(checkpoint), artifact_path="checkpoint")
        assert f"could not write {data_dir / 'mlflow' / 'artifacts' / run_id / 'artifacts'}: No space left on device" in str(caught.value)


class TestBoundedWaits:
    def test_mlflow_calls_wait_within_the_products_limits_and_the_environment_is_put_back(self, tmp_path: Path) -> None:
        from vae_pipeline.defs.tracking.failures import HTTP_LIMITS, mlflow_writes
        from vae_pipeline.defs.tracking.resource import MlflowTracking

        tracking = MlflowTracking(storage=default_resources(str(tmp_path))["storage"], tracking_uri=tracking_uri(tmp_path))
        with mlflow_writes(tracking, "a test"):
            inside = {name: os.environ.get(name) for name in HTTP_VARIABLES}
        assert inside == {name: HTTP_LIMITS[name] for name in HTTP_VARIABLES}
        assert int(inside["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 3 and int(inside["MLFLOW_HTTP_REQUEST_TIMEOUT"]) <= 10
        assert all(name not in os.environ for name in HTTP_VARIABLES)

    def test_a_server_that_does_not_answer_is_named_with_the_fix_and_the_users_limits_win(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from mlflow.tracking import MlflowClient

        from vae_pipeline.defs.tracking.failures import mlflow_writes
        from vae_pipeline.defs.tracking.resource import MlflowTracking, TrackingError

        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the user's choice: no retries
        uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        tracking = MlflowTracking(storage=default_resources(str(tmp_path))["storage"], tracking_uri=uri)
        started = time.monotonic()
        with pytest.raises(TrackingError) as caught, mlflow_writes(tracking, "the evaluation of vae-mnist v3"):
            MlflowClient(tracking_uri=uri).log_metric("0" * 32, "x", 1.0)
        assert time.monotonic() - started < 10  # the product's 3 retries would take about 14 s
        message = str(caught.value)
        assert f"MLflow tracking server {uri} stopped answering during the evaluation of vae-mnist v3 (Connection refused" in message
        assert "gave up after 0 retries" in message and "Restart the server" in message and "re-materialize" in message
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
