"""Runs and registered model versions in MLflow: does a run exist, its logged model, its version, an alias, its checkpoint."""

import time
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vae_pipeline.defs.tracking.resource import TrackingError


def logged_model_of_run(run_id: str) -> str | None:
    """The URI of the encoder model a run already logged, or None: a re-run after a crash logs it once."""
    found = mlflow.search_logged_models(filter_string=f"source_run_id = '{run_id}' AND name = 'model'", output_format="list")
    return f"models:/{found[0].model_id}" if found else None


def version_of_run(client: MlflowClient, name: str, run_id: str) -> int | None:
    """The registered version of `name` made from `run_id`, or None: registration is idempotent through this."""
    try:
        versions = client.search_model_versions(f"name = '{name}' AND run_id = '{run_id}'")
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return None
        raise
    return min(int(v.version) for v in versions) if versions else None


def register_version(client: MlflowClient, name: str, model_uri: str, run_id: str) -> int:
    """Register `model_uri` as a new version of `name` and wait until it is READY."""
    version = mlflow.register_model(model_uri, name, await_registration_for=0)
    wait_until_ready(client, name, str(version.version))
    return int(version.version)


def wait_until_ready(client: MlflowClient, name: str, version: str, timeout_s: float = 60) -> None:
    """Block until a model version finished registering (file stores register asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while client.get_model_version(name, version).status == "PENDING_REGISTRATION":
        if time.monotonic() > deadline:
            raise TrackingError(f"model {name} version {version} is still registering after {timeout_s}s.")
        time.sleep(0.2)


def download_checkpoint(client: MlflowClient, run_id: str, folder: Path) -> Path:
    """The training checkpoint a run logged (artifact checkpoint/checkpoint.pt), downloaded into `folder`."""
    try:
        local = client.download_artifacts(run_id, "checkpoint/checkpoint.pt", str(folder))
    except (MlflowException, OSError) as exc:
        raise TrackingError(
            f"MLflow run {run_id} has no checkpoint/checkpoint.pt artifact ({exc}); its model cannot be re-measured. "
            "Re-materialize vae_model for that configuration, or move the champion alias by hand."
        ) from exc
    return Path(local)


def version_by_alias(client: MlflowClient, name: str, alias: str) -> Any | None:
    """The model version holding `alias`, or None when no version does."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise
