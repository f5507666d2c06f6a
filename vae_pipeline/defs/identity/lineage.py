"""Exact data lineage: an asset reads the tensor store its model was trained on, and checks it.

The tensor store is content-addressed (tensors/<dataset>/<content hash>.safetensors), so two
ingests with different splits sit side by side. A model's manifest names the store it was
trained on; every downstream asset loads that store through here, which fails with a clear
message when the store is gone or holds other data than the model saw.
"""

from __future__ import annotations

import torch

from vae_pipeline.core.data.tensor_store import TensorStore, load_tensor_store, store_path
from vae_pipeline.core.model.checkpoint import load_model
from vae_pipeline.core.model.vae import VAE
from vae_pipeline.defs.manifests import DigitClassifier, MnistTensors, TrainedModel
from vae_pipeline.defs.storage.folder import PipelineStorage


class LineageError(RuntimeError):
    """An asset would read data its model was not trained on; the message names both versions and the fix."""


def load_model_store(storage: PipelineStorage, model: TrainedModel) -> TensorStore:
    """The tensor store a trained model's manifest names, verified to be the data the model saw."""
    path = storage.resolve(model.store_path)
    if not path.is_file():
        raise LineageError(
            f"{model.role} {model.fingerprint} was trained on tensor store {path}, which is gone; "
            "re-materialize mnist_tensors with the same config (identical content lands at the same path)."
        )
    store = load_tensor_store(path)
    if store.content_sha256 != model.data_version:
        raise LineageError(
            f"tensor store {path} holds data version {store.content_sha256[:12]}, but {model.role} "
            f"{model.fingerprint} was trained on {model.data_version[:12]}; re-materialize the model."
        )
    return store


def stored_tensors(storage: PipelineStorage, dataset: str, data_version: str) -> TensorStore | None:
    """The tensor store of `data_version` (content-addressed, so found by its hash), or None when the data folder lacks it."""
    path = storage.fetch(*store_path("tensors", dataset, data_version).parts)
    return load_tensor_store(path) if path.is_file() else None


def check_same_data(model: TrainedModel, mnist_tensors: MnistTensors) -> None:
    """Fail when the model handed downstream was trained on another data version than this run's store."""
    if model.data_version != mnist_tensors.content_sha256:
        raise LineageError(
            f"{model.role} {model.fingerprint} was trained on data version {model.data_version[:12]}, "
            f"but this run's mnist_tensors is {mnist_tensors.content_sha256[:12]}; materialize vae_model "
            "together with its downstream assets so that they agree."
        )


def check_judge_data(digit_classifier: DigitClassifier, mnist_tensors: MnistTensors) -> None:
    """Fail when the judge handed downstream was trained on another data version than this run's store."""
    if digit_classifier.data_version != mnist_tensors.content_sha256:
        raise LineageError(
            f"the judge was trained on data version {digit_classifier.data_version[:12]}, but this run's "
            f"mnist_tensors is {mnist_tensors.content_sha256[:12]}; materialize digit_classifier with this run's mnist_tensors."
        )


def load_trained_model(storage: PipelineStorage, model: TrainedModel, device: torch.device) -> VAE:
    """The model a training manifest names, refused by name if its checkpoint is of the wrong kind."""
    return load_model(storage.resolve(model.checkpoint), device, variational=model.role == "vae")
