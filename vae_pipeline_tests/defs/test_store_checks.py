"""A data folder or MLflow store that cannot be used is refused before the run's first step, naming the path and the fix.

Before, an `mlflow.db` of random bytes, `sqlite:////proc/x.db` and `foo://bar` failed only when
training started (after ingest and the judge), in MLflow's words; a read-only data folder or one
that is a file failed with a bare OSError.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest

from vae_pipeline.defs.store_checks import StoreError, check_data_folder, check_tracking_uri
from vae_pipeline_tests.helpers import materialize_all


def _failure_before_any_step(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    assert [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START] == []
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    return str(failure.event_specific_data.error)


def _leave_a_hot_journal(writer: Path, crashed: Path) -> None:
    """Copies into `crashed` an mlflow.db and the journal of a transaction that never ended, as a killed writer leaves
    them (no process holds their locks); rolled back, the table holds the one committed row."""
    writer.mkdir()
    with contextlib.closing(sqlite3.connect(writer / "mlflow.db")) as con:
        con.execute("CREATE TABLE t (x)")
        con.execute("INSERT INTO t VALUES ('committed')")
        con.commit()
        con.execute("PRAGMA cache_size=10")  # the transaction below spills into the file before it commits
        con.execute("INSERT INTO t SELECT randomblob(4000) FROM (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                    "FROM c WHERE i < 300) SELECT i FROM c)")
        for name in ("mlflow.db", "mlflow.db-journal"):
            shutil.copy(writer / name, crashed / name)


@pytest.fixture
def folder_to_lock(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None]]]:
    """A folder to fill, and what makes it one nobody can create files in: a tmpfs remounted read-only for root
    (permission bits do not bind root), else mode 555."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        yield folder, lambda: folder.chmod(0o555)
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"root cannot mount a tmpfs here ({mounted.stderr.strip()}), and mode bits do not bind root")
    yield folder, lambda: subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def read_only_folder(folder_to_lock: tuple[Path, Callable[[], None]]) -> Path:
    """An empty folder nobody can create files in."""
    folder, lock = folder_to_lock
    lock()
    return folder


class TestTrackingStore:
    def test_an_unknown_scheme(self, tmp_path: Path, mnist_slice_dir: Path) -> None:
        message = _failure_before_any_step(materialize_all(tmp_path / "data", mnist_slice_dir, uri="foo://bar"))
        assert "the MLflow tracking URI 'foo://bar' has the unknown scheme 'foo'" in message
        assert "unset MLFLOW_TRACKING_URI to use the data folder's own store" in message

    def test_a_store_of_random_bytes_is_named_and_left_as_it_is(self, tmp_path: Path, mnist_slice_dir: Path) -> None:
        db = tmp_path / "mlflow.db"
        garbage = os.urandom(8192)
        db.write_bytes(garbage)
        message = _failure_before_any_step(materialize_all(tmp_path / "data", mnist_slice_dir, uri=f"sqlite:///{db}"))
        assert f"the MLflow store {db} is not an SQLite database" in message and "Move it away" in message
        assert db.read_bytes() == garbage

    def test_a_store_that_cannot_be_created(self, tmp_path: Path, mnist_slice_dir: Path) -> None:
        message = _failure_before_any_step(materialize_all(tmp_path / "data", mnist_slice_dir, uri="sqlite:////proc/x.db"))
        assert "the MLflow store /proc/x.db cannot be written: /proc" in message and "a writable place" in message

    def test_a_damaged_database_behind_a_good_header(self, tmp_path: Path) -> None:
        db = tmp_path / "mlflow.db"
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE t (x)")
        db.write_bytes(db.read_bytes()[:16] + b"\xff" * 200)  # SQLite's header, then garbage where the page header was
        with pytest.raises(StoreError, match="cannot be opened as a database .* it is damaged"):
            check_tracking_uri(f"sqlite:///{db}")

    def test_a_store_whose_writer_was_killed_mid_transaction_is_rolled_back_not_called_damaged(self, tmp_path: Path) -> None:
        """What a kill -9 during an MLflow write leaves: the database and its journal (a hot journal). Before: a
        read-only check could not roll it back, and the store was called damaged, with the advice to move it away."""
        crashed = tmp_path / "crashed"
        crashed.mkdir()
        _leave_a_hot_journal(tmp_path / "writer", crashed)
        check_tracking_uri(f"sqlite:///{crashed / 'mlflow.db'}")
        assert not (crashed / "mlflow.db-journal").exists()  # rolled back...
        with contextlib.closing(sqlite3.connect(crashed / "mlflow.db")) as con:
            assert con.execute("SELECT x FROM t").fetchall() == [("committed",)]  # ...to the last commit

    def test_a_killed_writers_store_in_a_read_only_folder_is_named_as_unwritable_and_left_as_it_is(
        self, folder_to_lock: tuple[Path, Callable[[], None]], tmp_path: Path
    ) -> None:
        folder, lock = folder_to_lock
        _leave_a_hot_journal(tmp_path / "writer", folder)
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        lock()
        with pytest.raises(StoreError, match=f"the MLflow store {folder}/mlflow.db cannot be written: {folder}"):
            check_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before

    def test_usable_stores_pass(self, tmp_path: Path) -> None:
        check_tracking_uri(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")  # created on first use
        db = tmp_path / "existing.db"
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE t (x)")
        check_tracking_uri(f"sqlite:///{db}")
        (tmp_path / "empty.db").touch()  # an empty file is a new database to SQLite
        check_tracking_uri(f"sqlite:///{tmp_path / 'empty.db'}")
        for uri in ("http://127.0.0.1:5000", "postgresql+psycopg2://u@127.0.0.1/mlflow", str(tmp_path / "mlruns")):
            check_tracking_uri(uri)  # a server's reachability is checked by the tracking resource itself


class TestDataFolder:
    def test_a_data_folder_that_is_a_file(self, tmp_path: Path, mnist_slice_dir: Path) -> None:
        data = tmp_path / "data"
        data.write_text("not a folder")
        message = _failure_before_any_step(materialize_all(data, mnist_slice_dir, uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
        assert f"the data folder {data} is a file, not a folder: point $VAE_PIPELINE_DATA_DIR at a writable folder" in message
        assert data.read_text() == "not a folder"

    def test_a_read_only_data_folder(self, read_only_folder: Path, tmp_path: Path, mnist_slice_dir: Path) -> None:
        result = materialize_all(read_only_folder, mnist_slice_dir, uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
        message = _failure_before_any_step(result)
        assert f"cannot write in the data folder {read_only_folder}" in message
        assert "point $VAE_PIPELINE_DATA_DIR at a writable folder, or make it writable" in message

    def test_the_embedded_store_in_a_read_only_data_folder_is_refused_as_the_data_folder(self, read_only_folder: Path) -> None:
        with pytest.raises(StoreError, match=f"cannot write in {read_only_folder}, where the data folder"):
            check_data_folder(read_only_folder / "data", "VAE_PIPELINE_DATA_DIR")

    def test_a_folder_to_create_under_a_file(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("x")
        with pytest.raises(StoreError, match="cannot be created: .*file is a file, not a folder"):
            check_data_folder(tmp_path / "file" / "data", "VAE_PIPELINE_DATA_DIR")
        check_data_folder(tmp_path / "new" / "data", "VAE_PIPELINE_DATA_DIR")  # created later, by the run
