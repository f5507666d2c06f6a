"""How a step's MLflow work fails: within about a minute, with a message that names the cause and the fix.

Every asset wraps its MLflow writes in `mlflow_writes` (or `tracked_run`, which also starts the
step's own run and ends it). Inside:

- MLflow's HTTP retries and timeouts are bounded (`HTTP_LIMITS`); a variable the user set wins.
- A tracking server that stopped answering becomes a `TrackingError` that names the server, the
  fix, and what the step keeps (training: its checkpoint).
- A full disk under MLflow's own writes (its sqlite store, its artifact folder) becomes the
  pipeline's `WriteError`, which names the file and the fix, as every other write does.
- The run the step owns is ended FAILED with one short try; when even that fails, the message says
  so and that the run still shows RUNNING.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import mlflow
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import local_file_uri_to_path

from vae_pipeline.core.atomic import WriteError, write_error
from vae_pipeline.defs.tracking.resource import TrackingError, http_limits

if TYPE_CHECKING:
    from mlflow import ActiveRun

    from vae_pipeline.defs.tracking.resource import MlflowTracking

# MLflow reads these on every request (a changed value gets its own HTTP session). Its defaults
# (7 retries, backoff factor 2, 120 s a try) hold a step on a dead server for four minutes and more
# per call. With these, the waits between tries are 0, 4 and 8 s (plus up to 1 s of jitter each):
# a server restart of about ten seconds is ridden out; a refused connection (the server process is
# gone) fails a call in about 14 s; a server that accepts but never answers (stopped, or its host
# gone) in 4 tries x 10 s + 12 s, under a minute.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
# Ending a failed step's run is one short try whatever the user set: the server or the disk has
# just failed, and waiting again would only delay the step's failure.
LAST_TRY = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
# Write failures that no fix but space or permission cures (EACCES is left out: a read can raise it).
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class MlflowWork:
    """One step's MLflow work: the store it writes to, the run it writes to, and the run it owns."""

    def __init__(self, uri: str, doing: str, run_id: str | None, kept: Callable[[], str] | None) -> None:
        self.uri, self.doing, self.run_id, self.kept = uri, doing, run_id, kept
        self.owned: str | None = None

    def owns(self, run_id: str) -> None:
        """This step opened (or continued) `run_id`: if the step fails, the run is ended FAILED."""
        self.run_id = self.owned = run_id

    def end_failed(self) -> tuple[bool, str]:
        """End the owned run FAILED with one short try; returns whether that worked and a sentence that says so."""
        if self.owned is None:
            return True, ""
        with http_limits(LAST_TRY, user_wins=False):
            try:
                active = mlflow.active_run()
                if active is not None and active.info.run_id == self.owned:
                    # end_run forgets the active run before it writes, so MLflow's own exit
                    # handler (the `with mlflow.start_run()` block, atexit) does not try again.
                    mlflow.end_run("FAILED")
                else:
                    MlflowClient(tracking_uri=self.uri).set_terminated(self.owned, "FAILED")
            except MlflowException as exc:
                return False, (f"The MLflow run {self.owned} could not be marked FAILED either "
                               f"({_short_reason(exc, self)}), so it still shows RUNNING.")
        return True, f"The MLflow run {self.owned} is marked FAILED."

    def store_file(self) -> str:
        """MLflow's sqlite store file, or the store's URI when it is not a local sqlite file."""
        return self.uri.removeprefix("sqlite:///") if self.uri.startswith("sqlite:///") else self.uri

    def artifact_folder(self) -> str:
        """Where the run's artifacts are written (a local folder for a local store)."""
        if self.run_id is None:
            return f"the MLflow artifact store of {self.uri}"
        try:  # a read: it works on a full disk
            artifact_uri = MlflowClient(tracking_uri=self.uri).get_run(self.run_id).info.artifact_uri
        except MlflowException:
            return f"the artifact folder of MLflow run {self.run_id}"
        return local_file_uri_to_path(artifact_uri) if artifact_uri.startswith("file:") else artifact_uri


@contextmanager
def mlflow_writes(
    tracking: MlflowTracking, doing: str, *, run_id: str | None = None, kept: Callable[[], str] | None = None
) -> Iterator[MlflowWork]:
    """Run a step's MLflow calls with bounded waits; a dead server or a full disk fails it by name.

    `doing` names the work for the message ("training of vae 1a2b..."); `run_id` is the run written
    to, if known (a full artifact folder is named from it); `kept()` is a sentence on what survives
    the failure and how re-materializing uses it. Call `owns(run_id)` on the yielded object for a run
    this step opened: it is ended FAILED when the block fails.
    """
    work = MlflowWork(tracking.uri(), doing, run_id, kept)
    with http_limits(HTTP_LIMITS):
        try:
            yield work
        except Exception as exc:
            ended, ending = work.end_failed()
            explained = _explained(exc, work, ending)
            if explained is None:
                if not ended:  # the step's own error stands; the run left RUNNING is not hidden
                    exc.add_note(ending)
                raise
            raise explained from exc


@contextmanager
def tracked_run(
    tracking: MlflowTracking, doing: str, *, kept: Callable[[], str] | None = None, **start_run: object
) -> Iterator[ActiveRun]:
    """`mlflow.start_run(**start_run)` inside `mlflow_writes`: the run ends FINISHED with the block, or FAILED."""
    with mlflow_writes(tracking, doing, kept=kept) as work:
        run = mlflow.start_run(**start_run)
        work.owns(run.info.run_id)
        yield run
        mlflow.end_run()


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes and contexts, and what SQLAlchemy wraps (`orig`), outermost first."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__, getattr(current, "orig", None)]


def _server_lost(exc: BaseException, work: MlflowWork) -> bool:
    if not work.uri.startswith(("http://", "https://")):
        return False
    return any(isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)) for e in _chain(exc))


def _short_reason(exc: BaseException, work: MlflowWork) -> str:
    """What went wrong in a few words: the innermost cause, not MLflow's URL-laden wrapper."""
    chain = list(_chain(exc))
    if any(isinstance(e, (TimeoutError, requests.exceptions.Timeout)) for e in chain):
        return f"no answer within {os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT', '?')} s"
    for e in reversed(chain):
        if isinstance(e, sqlite3.Error) or (isinstance(e, OSError) and e.strerror):
            return str(e.strerror if isinstance(e, OSError) else e)
    return str(chain[-1]).splitlines()[0][:200] if str(chain[-1]) else type(chain[-1]).__name__


def _disk_full(exc: BaseException, work: MlflowWork) -> tuple[str, OSError] | None:
    """The path MLflow could not write for lack of room, and the error, or None when that is not what happened."""
    for e in _chain(exc):
        if isinstance(e, WriteError):
            return None  # the pipeline's own writer named its path already
        if isinstance(e, sqlite3.OperationalError) and (
            getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(e)
        ):
            return work.store_file(), OSError(errno.ENOSPC, str(e))
        if isinstance(e, OSError) and e.errno in _NO_ROOM:
            # shutil's copies name the destination second; MLflow's staged artifact writes name none.
            return str(e.filename2 or e.filename or work.artifact_folder()), e
    return None


def _explained(exc: Exception, work: MlflowWork, ending: str) -> Exception | None:
    """The failure as the user should read it, or None to let `exc` stand."""
    if isinstance(exc, TrackingError):
        return None  # the tracking resource's own message (an unreachable server at the start) is the precise one
    kept = f" {work.kept()}" if work.kept is not None else ""
    if _server_lost(exc, work):
        retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "?")
        return TrackingError(
            f"MLflow tracking server {work.uri} stopped answering during {work.doing} ({_short_reason(exc, work)}; "
            f"gave up after {retries} retries, see MLFLOW_HTTP_REQUEST_MAX_RETRIES and MLFLOW_HTTP_REQUEST_TIMEOUT). "
            "Restart the server (mlflow server with the same --backend-store-uri) or point MLFLOW_TRACKING_URI / the "
            f"tracking_uri resource config at one that answers, and re-materialize.{kept} {ending}".rstrip()
        )
    full = _disk_full(exc, work)
    if full is not None:
        path, error = full
        written = write_error(path, error)  # type: ignore[arg-type]  # a path, or words naming a store that is not one
        return WriteError(written.errno, f"{written.strerror} MLflow was writing it during {work.doing}.{kept} {ending}".rstrip())
    return None
