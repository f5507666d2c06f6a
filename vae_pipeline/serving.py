"""The MLflow model (logged from code, no pickle): images in, latent means out.

MLflow loads this file as the model's code; the weights come from the training checkpoint,
logged beside it as an artifact and read with torch.load(weights_only=True).
"""

import mlflow
import numpy as np
import torch

from vae_pipeline.core.model.checkpoint import load_model
from vae_pipeline.core.model.inference import encode_mean


class VaeEncoder(mlflow.pyfunc.PythonModel):
    """Encodes images (n, 784) float32 in [0, 1] to the posterior means mu (n, latent_dim)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = load_model(context.artifacts["checkpoint"], "cpu")  # not a manifest: MLflow pyfunc artifacts

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: np.ndarray, params=None) -> np.ndarray:
        c, h, w = self.model.cfg.image_shape
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32)).reshape(-1, c, h, w)  # (n, C, H, W)
        mu, _ = encode_mean(self.model, x, batch_size=1024, device="cpu")  # (n, latent_dim)
        return mu.numpy()


mlflow.models.set_model(VaeEncoder())
