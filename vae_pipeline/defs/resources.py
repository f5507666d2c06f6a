"""The resources the definitions use: the data folder, the manifest IO manager and MLflow tracking."""

from typing import Any

from vae_pipeline.defs.storage.folder import PipelineStorage, default_data_dir
from vae_pipeline.defs.storage.io_manager import ManifestIOManager
from vae_pipeline.defs.tracking.resource import MlflowTracking


def default_resources(data_dir: str | None = None, tracking_uri: str | None = None,
                      cache_dir: str | None = None) -> dict[str, Any]:
    """The resources the definitions use; tests pass their own data folder, tracking URI and local copy."""
    storage = PipelineStorage(data_dir=data_dir or default_data_dir(), cache_dir=cache_dir)
    return {
        "storage": storage,
        "io_manager": ManifestIOManager(storage=storage),
        "mlflow_tracking": MlflowTracking(storage=storage, tracking_uri=tracking_uri),
    }
