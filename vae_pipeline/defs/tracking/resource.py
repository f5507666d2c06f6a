"""The MLflow tracking resource: which store or server, activated with bounded HTTP limits, and its runs' URLs."""

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vae_pipeline.defs.storage.folder import PipelineStorage
from vae_pipeline.defs.store_checks import check_tracking_uri

CHALLENGER = "challenger"
CHAMPION = "champion"
DAGSTER_UI_ENV = "DAGSTER_WEBSERVER_URL"
DEFAULT_DAGSTER_UI = "http://127.0.0.1:3000"


_active_uri: list[str] = []  # the store this process last activated


def _switch_store(uri: str) -> None:
    """Forget MLflow's per-process artifact locations when this process moves to another store.

    MLflow caches each run's artifact repository by run id alone, whatever the tracking store. A
    copied data folder holds the same run ids as the original, so without this a process that used
    both would write the copy's artifacts into the original's folder.
    """
    if _active_uri and _active_uri[0] != uri:
        cache = getattr(mlflow.tracking._tracking_service.utils, "_artifact_repos_cache", None)
        if cache is not None:
            cache.clear()
    _active_uri[:] = [uri]


def restore_environment(values: dict[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextmanager
def http_limits(limits: dict[str, str], *, user_wins: bool = True) -> Iterator[None]:
    """Set MLflow's HTTP variables (MLFLOW_HTTP_REQUEST_*) to `limits` for the block; a variable already set wins if `user_wins`.

    MLflow reads them on every request (a changed value gets its own HTTP session), so a block
    can bound its calls without touching anyone else's.
    """
    previous = {key: os.environ.get(key) for key in limits}
    for key, value in limits.items():
        if not (user_wins and previous[key] is not None):
            os.environ[key] = value
    try:
        yield
    finally:
        restore_environment(previous)


class TrackingError(RuntimeError):
    """The MLflow tracking server cannot be used; the message names the URI and the fix."""


@contextmanager
def _sqlite_creation_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a sqlite store while MLflow opens it.

    MLflow creates a new store's tables on first open without a transaction that would stop a
    second process doing the same: two runs starting at once on a fresh data folder failed with
    "table experiments already exists". Other stores need no lock.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl  # POSIX; the pipeline's scripts and CI are Linux

    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# Columns of MLflow's sqlite schema that hold file URIs under the data folder.
_URI_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
    ("datasets", "dataset_source"),
)


def relocate_embedded_store(db: Path, data_root: Path, experiment_name: str) -> None:
    """Point the embedded store's artifact URIs at the data folder it is in now.

    MLflow records absolute artifact URIs. When the data folder was moved or copied, the store's
    rows still name the old place: a moved folder would fail to find its artifacts, and a copy
    would write new ones into the original. The old place is read from the experiment's artifact
    location (always <data>/mlflow/artifacts, see `experiment_id`) and rewritten in every row that
    holds it, once, on the next open. Only this pipeline's own sqlite store is rewritten; a
    tracking server owns its artifact root.
    """
    new_root = data_root.resolve().as_uri()
    with sqlite3.connect(db) as con:
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return
        row = con.execute("SELECT artifact_location FROM experiments WHERE name = ?", (experiment_name,)).fetchone()
        suffix = "/mlflow/artifacts"
        if row is None or not row[0].startswith("file://") or not row[0].endswith(suffix):
            return
        old_root = row[0][: -len(suffix)]
        if old_root == new_root:
            return
        for table, column in _URI_COLUMNS:
            if table in tables:
                con.execute(f"UPDATE {table} SET {column} = REPLACE({column}, ?, ?) WHERE {column} LIKE ?",
                            (old_root + "/", new_root + "/", f"%{old_root}/%"))


class MlflowTracking(dg.ConfigurableResource):
    """Where MLflow runs and registered models live: $MLFLOW_TRACKING_URI, else sqlite under data/mlflow."""

    storage: PipelineStorage
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///<data_dir>/mlflow/mlflow.db
    experiment_name: str = "vae-pipeline"
    registered_model_prefix: str = "vae"  # models register as "<prefix>-<dataset>", e.g. vae-mnist
    ui_url: str | None = None  # base URL for links; default the tracking URI when it is http(s), else 127.0.0.1:5000
    dagster_ui_url: str | None = None  # the Dagster UI that registry versions link to; None: $DAGSTER_WEBSERVER_URL, else 127.0.0.1:3000

    def uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        if self.storage.is_remote:
            # A sqlite file cannot live in an object store, and one in this machine's local copy would
            # hold a registry that no other worker sees.
            raise TrackingError(
                f"the data folder {self.storage.data_dir} is remote, so the embedded MLflow store (a sqlite file in "
                "the data folder) cannot be used: set MLFLOW_TRACKING_URI to an MLflow server that every worker "
                "reaches (deploy/team/start.sh starts one), or the mlflow_tracking resource's tracking_uri."
            )
        return f"sqlite:///{self.embedded_db()}"

    def embedded_db(self) -> Path:
        """The default store: a sqlite file in the data folder, its artifacts beside it."""
        return self.storage.path("mlflow", "mlflow.db")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Resources start before the run's first step: a bad store or an unreachable server fails the run before ingest.
        if not (self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
            self.storage.check_usable()  # the embedded store is created in the data folder
        uri = self.uri()
        check_tracking_uri(uri)
        if uri.startswith(("http://", "https://")):
            self._check_reachable(MlflowClient(tracking_uri=uri, registry_uri=uri), uri)

    def activate(self) -> MlflowClient:
        """Point MLflow's fluent API at this store, check it answers, and return a client."""
        uri = self.uri()
        _switch_store(uri)
        # mlflow.set_tracking_uri() also exports the URI as $MLFLOW_TRACKING_URI (for subprocesses).
        # Put the user's environment back: a value left there by this call is not the user's choice
        # and would outlive a change of data folder. MLflow's fluent API reads its own global first.
        previous = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        restore_environment(previous)
        with _sqlite_creation_lock(uri):
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # creates a new sqlite store's tables
            if uri.startswith("sqlite:///") and uri == f"sqlite:///{self.embedded_db()}":  # no data/mlflow/ folder when tracking to a server
                relocate_embedded_store(self.embedded_db(), self.storage.root, self.experiment_name)
        self._check_reachable(client, uri)
        return client

    def _check_reachable(self, client: MlflowClient, uri: str) -> None:
        if not uri.startswith(("http://", "https://")):
            return
        # MLflow retries for minutes by default; a wrong URI should fail in seconds.
        with http_limits({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}, user_wins=False):
            try:
                client.search_experiments(max_results=1)
            except MlflowException as exc:
                raise TrackingError(
                    f"MLflow tracking server {uri} is unreachable ({exc.message.splitlines()[0]}); start it "
                    "(mlflow server --host 127.0.0.1) or set MLFLOW_TRACKING_URI / the tracking_uri resource config."
                ) from exc

    def experiment_id(self, client: MlflowClient) -> str:
        """The experiment's id, created on first use with artifacts under the data folder."""
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        location = None
        if self.uri().startswith("sqlite:"):
            location = self.storage.folder("mlflow", "artifacts").as_uri()
        try:
            return client.create_experiment(self.experiment_name, artifact_location=location)
        except MlflowException:  # another run created it first
            return client.get_experiment_by_name(self.experiment_name).experiment_id

    def end_runs_of(self, dagster_run_id: str, status: str) -> list[str]:
        """Mark `status` (FAILED, KILLED) the MLflow runs still RUNNING that Dagster run `dagster_run_id` started; their ids.

        A Dagster run whose process died cannot end its MLflow runs itself. An embedded store that
        does not exist yet holds none, and is not created just to look.
        """
        uri = self.uri()
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            return []
        client = self.activate()
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            return []
        running = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`dagster.run_id` = '{dagster_run_id}' AND attributes.status = 'RUNNING'"
        )
        for run in running:
            self.end_if_running(client, run.info.run_id, status)
        return [run.info.run_id for run in running]

    def end_if_running(self, client: MlflowClient, run_id: str | None, status: str) -> None:
        """Mark a run left RUNNING by a dead process as ended (FAILED or KILLED); others are left alone."""
        if run_exists(client, run_id) and client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        base = self.ui_url
        if base is None:
            uri = self.uri()
            base = uri if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def dagster_run_url(self, run_id: str) -> str:
        """Where the Dagster UI shows run `run_id` (`dagster dev` serves it on 127.0.0.1:3000 by default)."""
        base = self.dagster_ui_url or os.environ.get(DAGSTER_UI_ENV) or DEFAULT_DAGSTER_UI
        return f"{base.rstrip('/')}/runs/{run_id}"


def run_exists(client: MlflowClient, run_id: str | None) -> bool:
    """Whether the tracking server holds this run (a lost store or another server does not)."""
    if run_id is None:
        return False
    try:
        client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return False
        raise
    return True
