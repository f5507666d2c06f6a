"""What a training run logs to MLflow: epoch metrics, flat params, its input dataset and the encoder model."""

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.models import infer_signature

from vae_pipeline.core.model.checkpoint import load_model
from vae_pipeline.core.model.inference import encode_mean
from vae_pipeline.core.model.train import Callback

PACKAGE_DIR = Path(__file__).resolve().parents[2]
SERVING_CODE = PACKAGE_DIR / "serving.py"


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


def log_encoder_model(checkpoint: Path, example: np.ndarray) -> Any:
    """Log the encoder as an MLflow model from code (no pickle), with a signature and an input example."""
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
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}", f"mlflow=={mlflow.__version__}"],
    )
