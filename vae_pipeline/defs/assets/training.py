"""Training: the VAE (tracked in MLflow, registered) and the plain auto-encoder baseline."""

import dataclasses
import hashlib
import json
from typing import Any

import dagster as dg
import mlflow
import torch

from vae_pipeline.core import data
from vae_pipeline.core.config import ConfigError, ModelConfig, TrainConfig, from_dict, to_dict
from vae_pipeline.core.device import resolve_device
from vae_pipeline.core.model import build_model
from vae_pipeline.core.train import ProgressPrinter, fit
from vae_pipeline.defs.resources import PipelineStorage, write_json_atomic
from vae_pipeline.defs.tracking import (
    CHALLENGER,
    MlflowEpochLogger,
    MlflowTracking,
    flat_params,
    log_dataset,
    log_encoder_model,
    wait_until_ready,
)

GROUP = "training"
# Bump when a change to the training code should retrain models whose config and data are unchanged.
TRAINING_CODE_VERSION = "1"
_M, _T = ModelConfig, TrainConfig  # the core dataclasses hold the one copy of every default


class VaeTrainingConfig(dg.Config):
    """What to train: architecture, objective, optimisation and device."""

    architecture: str = _M.architecture  # "mlp" (784-400-20) or "conv"
    hidden_dims: list[int] = list(_M.hidden_dims)
    latent_dim: int = _M.latent_dim
    likelihood: str = _M.likelihood  # "bernoulli" or "gaussian"
    gaussian_sigma: float | None = _M.gaussian_sigma  # None learns the decoder's sigma
    beta: float = _T.beta
    kl_warmup_epochs: int = _T.kl_warmup_epochs
    free_bits: float = _T.free_bits
    mc_samples: int = _T.mc_samples
    binarization: str = _T.binarization  # "dynamic", "static" or "none"
    epochs: int = _T.epochs
    batch_size: int = _T.batch_size
    learning_rate: float = _T.learning_rate
    seed: int = _T.seed
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:N"
    amp: bool = _T.amp  # mixed precision on CUDA

    def to_model_config(self) -> ModelConfig:
        return ModelConfig(
            architecture=self.architecture,
            hidden_dims=tuple(self.hidden_dims),
            latent_dim=self.latent_dim,
            likelihood=self.likelihood,
            gaussian_sigma=self.gaussian_sigma,
        )

    def to_train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            beta=self.beta,
            kl_warmup_epochs=self.kl_warmup_epochs,
            free_bits=self.free_bits,
            mc_samples=self.mc_samples,
            binarization=self.binarization,
            seed=self.seed,
            amp=self.amp,
        )


def _fingerprint(model_cfg: ModelConfig, train_cfg: TrainConfig, data_version: str, device: torch.device) -> str:
    """Identifies a training result: same configs, data, code and device type give the same model."""
    key = {
        "model": to_dict(model_cfg),
        "train": to_dict(train_cfg),
        "data": data_version,
        "code": TRAINING_CODE_VERSION,
        "device": device.type,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _validate_against_data(train_cfg: TrainConfig, n_train: int) -> None:
    if train_cfg.batch_size > n_train:
        raise ConfigError(
            f"batch_size={train_cfg.batch_size} is larger than the {n_train} training images; use a smaller batch_size."
        )


def _train_tracked(
    context: dg.AssetExecutionContext,
    *,
    role: str,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    device: torch.device,
    mnist_tensors: dict,
    storage: PipelineStorage,
    mlflow_tracking: MlflowTracking,
    register_as: str | None,
) -> dict[str, Any]:
    """Train (or resume, or reuse) one model inside one MLflow run; returns its manifest.

    A finished result for the same fingerprint is reused without training. A checkpoint left by
    an interrupted materialization is resumed, and its MLflow run continued.
    """
    # Both checks come before anything is written: a bad batch size or tracking URI leaves no folder.
    _validate_against_data(train_cfg, mnist_tensors["counts"]["train"])
    client = mlflow_tracking.activate()  # fails fast on an unreachable tracking server
    data_version = mnist_tensors["content_sha256"]
    fingerprint = _fingerprint(model_cfg, train_cfg, data_version, device)
    folder = storage.folder("models", role, fingerprint)
    summary_path, run_path, checkpoint = folder / "summary.json", folder / "mlflow_run.json", folder / "checkpoint.pt"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        context.log.info(f"{role}: config, data and code unchanged since {summary['mlflow_run_id']}; not retraining")
        return {**summary, "reused": True}

    store = data.load_tensor_store(mnist_tensors["path"])
    experiment_id = mlflow_tracking.experiment_id(client)
    run_id = json.loads(run_path.read_text())["run_id"] if run_path.is_file() else None
    if run_id is not None and checkpoint.is_file():
        context.log.info(f"{role}: resuming from {checkpoint} (MLflow run {run_id})")
    tags = {
        "role": role,
        "dagster.run_id": context.run.run_id,
        "dagster.asset_key": context.asset_key.to_user_string(),
        "code_version": TRAINING_CODE_VERSION,
        "data_version": data_version,
        "fingerprint": fingerprint,
        "dataset": mnist_tensors["dataset"],
    }
    with mlflow.start_run(
        run_id=run_id,
        experiment_id=None if run_id else experiment_id,
        run_name=None if run_id else f"{role}-{fingerprint[:8]}",
        tags=tags,
        log_system_metrics=True,
    ) as run:
        write_json_atomic(run_path, {"run_id": run.info.run_id})
        if run_id is None:
            mlflow.log_params({**flat_params("model", to_dict(model_cfg)), **flat_params("train", to_dict(train_cfg))})
            mlflow.log_params({"device": str(device), "n_train": len(store["train"]), "n_val": len(store["val"])})
            log_dataset(mnist_tensors["path"], mnist_tensors["dataset"], data_version, "training")
        model = build_model(model_cfg, seed=train_cfg.seed)
        history = fit(
            model,
            store["train"].float_images(),
            store["val"].float_images(),
            train_cfg,
            device,
            callbacks=[MlflowEpochLogger(), ProgressPrinter()],
            checkpoint_path=checkpoint,
        )
        final = {k: float(v) for k, v in history.last.items()}
        mlflow.log_artifact(str(checkpoint), artifact_path="checkpoint")
        model_version = None
        if register_as is not None:
            example = store["test"].float_images()[:4].reshape(4, -1).numpy()  # (4, 784)
            logged = log_encoder_model(checkpoint, example, register_as)
            model_version = int(logged.registered_model_version)
            wait_until_ready(client, register_as, str(model_version))
            client.set_registered_model_alias(register_as, CHALLENGER, str(model_version))
    summary = {
        "role": role,
        "checkpoint": str(checkpoint),
        "fingerprint": fingerprint,
        "model_config": to_dict(model_cfg),
        "train_config": to_dict(train_cfg),
        "device": str(device),
        "data_version": data_version,
        "dataset": mnist_tensors["dataset"],
        "mlflow_run_id": run.info.run_id,
        "mlflow_experiment_id": experiment_id,
        "mlflow_run_url": mlflow_tracking.run_url(experiment_id, run.info.run_id),
        "model_name": register_as,
        "model_version": model_version,
        "final_metrics": final,
        "train_seconds": sum(r["seconds"] for r in history),
    }
    write_json_atomic(summary_path, summary)  # written last: its presence means "finished"
    return {**summary, "reused": False}


def _metadata(manifest: dict[str, Any]) -> dict[str, Any]:
    final = manifest["final_metrics"]
    metadata: dict[str, Any] = {
        "mlflow_run_id": manifest["mlflow_run_id"],
        "mlflow_run": dg.MetadataValue.url(manifest["mlflow_run_url"]),
        "checkpoint": dg.MetadataValue.path(manifest["checkpoint"]),
        "fingerprint": manifest["fingerprint"],
        "device": manifest["device"],
        "reused": manifest["reused"],
        "epochs": int(final["epoch"]),
        "train_seconds": round(manifest["train_seconds"], 1),
        "val_neg_elbo": round(final["val_neg_elbo"], 3),
        "val_recon_nll": round(final["val_recon_nll"], 3),
        "val_kl": round(final["val_kl"], 3),
    }
    if manifest["model_version"] is not None:
        metadata["model_name"] = manifest["model_name"]
        metadata["model_version"] = manifest["model_version"]
    return metadata


@dg.asset(group_name=GROUP, code_version=TRAINING_CODE_VERSION, kinds={"pytorch", "mlflow"})
def vae_model(
    context: dg.AssetExecutionContext,
    config: VaeTrainingConfig,
    storage: PipelineStorage,
    mlflow_tracking: MlflowTracking,
    mnist_tensors: dict,
) -> dg.Output:
    """The trained VAE: checkpoint, MLflow run, and a new registered model version (alias challenger)."""
    model_cfg, train_cfg = config.to_model_config(), config.to_train_config()  # invalid config fails here, before any work
    device = resolve_device(config.device)
    manifest = _train_tracked(
        context,
        role="vae",
        model_cfg=model_cfg,
        train_cfg=train_cfg,
        device=device,
        mnist_tensors=mnist_tensors,
        storage=storage,
        mlflow_tracking=mlflow_tracking,
        register_as=f"{mlflow_tracking.registered_model_prefix}-{mnist_tensors['dataset']}",
    )
    return dg.Output(manifest, metadata=_metadata(manifest), data_version=dg.DataVersion(manifest["fingerprint"]))


@dg.asset(group_name=GROUP, code_version=TRAINING_CODE_VERSION, kinds={"pytorch", "mlflow"})
def autoencoder_baseline(
    context: dg.AssetExecutionContext,
    storage: PipelineStorage,
    mlflow_tracking: MlflowTracking,
    mnist_tensors: dict,
    vae_model: dict,
) -> dg.Output:
    """A plain deterministic auto-encoder with the VAE's architecture and optimiser, for comparison."""
    model_cfg = dataclasses.replace(from_dict(ModelConfig, vae_model["model_config"]), variational=False)
    train_cfg = from_dict(TrainConfig, vae_model["train_config"])
    manifest = _train_tracked(
        context,
        role="autoencoder",
        model_cfg=model_cfg,
        train_cfg=train_cfg,
        device=torch.device(vae_model["device"]),
        mnist_tensors=mnist_tensors,
        storage=storage,
        mlflow_tracking=mlflow_tracking,
        register_as=None,
    )
    return dg.Output(manifest, metadata=_metadata(manifest), data_version=dg.DataVersion(manifest["fingerprint"]))
