"""MLflow: the tracking resource, the epoch logger callback and the model registry helpers."""

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import numpy as np
import torch
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from vae_pipeline.core.inference import encode_mean
from vae_pipeline.core.train import Callback, load_model
from vae_pipeline.defs.resources import PipelineStorage

CHALLENGER = "challenger"
CHAMPION = "champion"
SERVING_CODE = Path(__file__).resolve().parents[1] / "serving.py"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


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


class MlflowTracking(dg.ConfigurableResource):
    """Where MLflow runs and registered models live: $MLFLOW_TRACKING_URI, else sqlite under data/mlflow."""

    storage: PipelineStorage
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///<data_dir>/mlflow/mlflow.db
    experiment_name: str = "vae-pipeline"
    registered_model_prefix: str = "vae"  # models register as "<prefix>-<dataset>", e.g. vae-mnist
    ui_url: str | None = None  # base URL for links; default the tracking URI when it is http(s), else 127.0.0.1:5000

    def uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        return f"sqlite:///{self.storage.path('mlflow', 'mlflow.db')}"

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Resources start before the run's first step: an unreachable server fails the run before ingest.
        uri = self.uri()
        if uri.startswith(("http://", "https://")):
            self._check_reachable(MlflowClient(tracking_uri=uri, registry_uri=uri), uri)

    def activate(self) -> MlflowClient:
        """Point MLflow's fluent API at this store, check it answers, and return a client."""
        uri = self.uri()
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        with _sqlite_creation_lock(uri):
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # creates a new sqlite store's tables
        self._check_reachable(client, uri)
        return client

    def _check_reachable(self, client: MlflowClient, uri: str) -> None:
        if not uri.startswith(("http://", "https://")):
            return
        # MLflow retries for minutes by default; a wrong URI should fail in seconds.
        previous = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "10"
        try:
            client.search_experiments(max_results=1)
        except MlflowException as exc:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({exc.message.splitlines()[0]}); start it "
                "(mlflow server --host 127.0.0.1) or set MLFLOW_TRACKING_URI / the tracking_uri resource config."
            ) from exc
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

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

    def run_url(self, experiment_id: str, run_id: str) -> str:
        base = self.ui_url
        if base is None:
            uri = self.uri()
            base = uri if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


class MlflowEpochLogger(Callback):
    """Logs each epoch's history record as MLflow metrics of the active run (step = epoch)."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if k != "epoch"}, step=epoch)


def flat_params(prefix: str, values: dict[str, Any]) -> dict[str, str]:
    return {f"{prefix}.{k}": str(v) for k, v in values.items()}


def log_dataset(store_path: str, name: str, digest: str, context: str) -> None:
    """Record the tensor store as the run's input dataset (source path and content hash)."""
    source = LocalArtifactDatasetSource(Path(store_path).resolve().as_uri())
    mlflow.log_input(MetaDataset(source=source, name=name, digest=digest[:32]), context=context)


def log_encoder_model(checkpoint: Path, example: np.ndarray, registered_model_name: str | None) -> Any:
    """Log the encoder as an MLflow model from code, with a signature and an input example.

    With `registered_model_name`, the model becomes a new version of that registered model.
    """
    model = load_model(checkpoint, "cpu")
    c, h, w = model.cfg.image_shape
    mu, _ = encode_mean(model, torch.as_tensor(example).reshape(-1, c, h, w), device="cpu")
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(SERVING_CODE),
        artifacts={"checkpoint": str(checkpoint)},
        code_paths=[str(PACKAGE_DIR)],
        signature=infer_signature(example, mu.numpy()),
        input_example=example,
        registered_model_name=registered_model_name,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}", f"mlflow=={mlflow.__version__}"],
    )


def wait_until_ready(client: MlflowClient, name: str, version: str, timeout_s: float = 60) -> None:
    """Block until a model version finished registering (file stores register asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while client.get_model_version(name, version).status == "PENDING_REGISTRATION":
        if time.monotonic() > deadline:
            raise TrackingError(f"model {name} version {version} is still registering after {timeout_s}s.")
        time.sleep(0.2)


def version_by_alias(client: MlflowClient, name: str, alias: str) -> Any | None:
    """The model version holding `alias`, or None when no version does."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise
