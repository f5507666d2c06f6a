"""Checks, at a run's start, that the data folder and the MLflow tracking store can be used.

Each is called by its resource's `setup_for_execution`, which Dagster runs before the run's first
step (in-process, the default executor; under the multiprocess and Celery executors when a step
that uses the resource starts, before its work). Without them a bad store failed late and in
the library's words: a data folder that is a file or read-only with a bare OSError, an `mlflow.db`
of random bytes or an unknown URI scheme only when training started, after ingest and the judge.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from pathlib import Path
from urllib.parse import urlparse

# The tracking URI schemes MLflow 3 opens: SQLAlchemy databases (a driver may follow a "+"),
# an MLflow server, a folder (file store), Databricks and Unity Catalog.
KNOWN_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks", "databricks-uc", "uc")
SQLITE_HEADER = b"SQLite format 3\x00"
# What a read-only connection answers for a store whose last writer died mid-transaction (a rollback
# journal to play back, or a WAL to recover): the store is whole once a writer has done that.
INTERRUPTED_WRITE = ("SQLITE_READONLY_ROLLBACK", "SQLITE_READONLY_RECOVERY")
TRACKING_FIX = "unset MLFLOW_TRACKING_URI to use the data folder's own store, or point it (or the tracking_uri resource config) at"


class StoreError(RuntimeError):
    """The data folder or the tracking store cannot be used; the message names the path and the fix."""


def _writable(folder: Path) -> str | None:
    """Why a file cannot be created in `folder`, or None when it can (tried: permission bits do not bind root)."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".vae-pipeline-write-check."):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_data_folder(root: Path, env: str) -> None:
    """The local data folder is a folder this process can write in, or can be created; `env` names the variable that moves it."""
    fix = f"point ${env} at a writable folder"
    if root.exists() and not root.is_dir():
        raise StoreError(f"the data folder {root} is a file, not a folder: {fix}, or move that file away.")
    existing = _nearest_existing(root)
    if not existing.is_dir():
        raise StoreError(f"the data folder {root} cannot be created: {existing} is a file, not a folder; {fix}.")
    problem = _writable(existing)
    if problem is not None:
        where = f"the data folder {root}" if existing == root else f"{existing}, where the data folder {root} would be created,"
        raise StoreError(f"cannot write in {where} ({problem}): {fix}, or make it writable.")


def check_tracking_uri(uri: str) -> None:
    """The tracking URI names a store MLflow can open: a known scheme, and for sqlite a database file it can use."""
    scheme = urlparse(uri).scheme.split("+")[0].lower()
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):  # a plain path (or a Windows drive): a file store
        return
    if scheme not in KNOWN_SCHEMES:
        raise StoreError(
            f"the MLflow tracking URI {uri!r} has the unknown scheme {scheme!r} (known: {', '.join(KNOWN_SCHEMES)}); "
            f"{TRACKING_FIX} sqlite:///<path>, http://<server> or postgresql://<database>."
        )
    if scheme == "sqlite":
        _check_sqlite(uri)


def _check_sqlite(uri: str) -> None:
    if not uri.startswith("sqlite:///"):
        raise StoreError(f"the MLflow tracking URI {uri!r} names no file; write sqlite:///<absolute or relative path>.")
    if uri.removeprefix("sqlite:///") in ("", ":memory:"):
        raise StoreError(f"the MLflow tracking URI {uri!r} is an in-memory store that every process loses; {TRACKING_FIX} a file.")
    db = Path(uri.removeprefix("sqlite:///").split("?")[0])
    if db.exists():
        if not db.is_file():
            raise StoreError(f"the MLflow store {db} is not a file (a folder?); {TRACKING_FIX} a database file.")
        _check_sqlite_file(db)
        folder = db.parent  # sqlite writes its journal beside the file
    else:
        folder = _nearest_existing(db.parent)
        if not folder.is_dir():
            raise StoreError(f"the MLflow store {db} cannot be created: {folder} is a file; {TRACKING_FIX} a writable place.")
    problem = _writable(folder)
    if problem is not None:
        raise StoreError(f"the MLflow store {db} cannot be written: {folder} ({problem}); {TRACKING_FIX} a writable place.")


def _check_sqlite_file(db: Path) -> None:
    try:
        with open(db, "rb") as fh:
            header = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"the MLflow store {db} cannot be read ({exc.strerror}); make it readable, or {TRACKING_FIX} another store.") from exc
    if header and header != SQLITE_HEADER:  # an empty file is a new database to sqlite
        raise StoreError(
            f"the MLflow store {db} is not an SQLite database (its first bytes are not SQLite's header): it is damaged "
            f"or another file. Move it away (MLflow then starts a new, empty store there) or restore it from a backup; "
            f"or {TRACKING_FIX} another store."
        )
    error = _open_error(db, "ro")
    if error is not None and getattr(error, "sqlite_errorname", None) in INTERRUPTED_WRITE:  # Python 3.11+ names it
        # A writer died mid-transaction and left its journal beside the file: a read-only connection may not roll
        # it back, a writer does (SQLite, on opening; MLflow's connection would, first thing).
        if _writable(db.parent) is not None:
            return  # the caller names the folder that cannot be written
        error = _open_error(db, "rw")
    if error is None or "locked" in str(error):  # locked: another process is writing it, in use, not damaged
        return
    raise StoreError(
        f"the MLflow store {db} cannot be opened as a database ({error}): it is damaged. Move it away (MLflow then starts "
        f"a new store) or restore it from a backup."
    ) from error


def _open_error(db: Path, mode: str) -> sqlite3.DatabaseError | None:
    """What SQLite answers when `db` is opened (mode "ro" or "rw") and its schema read; None when that works."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode={mode}", uri=True)) as con:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        return exc
    return None


__all__ = ["KNOWN_SCHEMES", "StoreError", "check_data_folder", "check_tracking_uri"]
