"""Training: the VAE (tracked in MLflow, registered) and the plain auto-encoder baseline."""

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import numpy as np
import torch
from mlflow.tracking import MlflowClient

from vae_pipeline.core.data.tensor_store import load_tensor_store
from vae_pipeline.core.model.checkpoint import CheckpointError, file_sha256, load_checkpoint
from vae_pipeline.core.model.config import ConfigError, ModelConfig, TrainConfig, to_dict
from vae_pipeline.core.model.device import resolve_device
from vae_pipeline.core.model.memory import check_training_fits
from vae_pipeline.core.model.train import Callback, fit
from vae_pipeline.core.model.vae import build_model
from vae_pipeline.core.selection.sweep import Variant
from vae_pipeline.defs.automation import on_new_data
from vae_pipeline.defs.config_classes import dagster_config, to_core
from vae_pipeline.defs.manifests import ManifestError, MnistTensors, TrainedModel, read_manifest, write_manifest
from vae_pipeline.defs.progress import DagsterProgressLogger
from vae_pipeline.defs.storage.folder import PipelineStorage, write_json_atomic
from vae_pipeline.defs.tracking.failures import mlflow_writes, tracked_run
from vae_pipeline.defs.tracking.models import logged_model_of_run, register_version, version_of_run
from vae_pipeline.defs.tracking.registry import describe_version
from vae_pipeline.defs.tracking.resource import CHALLENGER, MlflowTracking, run_exists
from vae_pipeline.defs.tracking.run_logging import MlflowEpochLogger, flat_params, log_dataset, log_encoder_model
from vae_pipeline.defs.variants import VARIANT_FIELDS, VARIANTS, variant_of

GROUP = "training"
# Bump when a change to the training code should retrain models whose config and data are unchanged.
TRAINING_CODE_VERSION = "1"


VaeTrainingConfig = dagster_config(
    "VaeTrainingConfig",
    "How to train every variant: architecture, optimisation and device (fields of ModelConfig and TrainConfig); "
    "latent size, beta and likelihood come from the variant, the partition key.",
    ModelConfig,
    TrainConfig,
    module=__name__,
    # The variant (partition key) sets latent_dim, beta and likelihood; the AE baseline sets
    # variational; MNIST fixes the image shape.
    exclude=("variational", "image_shape", *VARIANT_FIELDS),
    extra={"device": (str, "auto")},  # "auto" (CUDA when present), "cpu", "cuda", "cuda:N"
)


def variant_configs(config: VaeTrainingConfig, variant: Variant) -> tuple[ModelConfig, TrainConfig]:
    """One variant's model and training configs: the run's config with the variant's latent size, beta and likelihood."""
    return to_core(config, ModelConfig, **variant.model_overrides()), to_core(config, TrainConfig, **variant.train_overrides())


class PublishCheckpoint(Callback):
    """Publishes the checkpoint after every epoch, so that a retry on another worker resumes from it."""

    def __init__(self, storage: PipelineStorage, checkpoint: Path) -> None:
        self.storage, self.checkpoint = storage, checkpoint

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.storage.publish(self.checkpoint)


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


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON record, or None when it is missing or unreadable (a crash mid-write cannot cause that: writes are atomic)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _checkpoint_problem(checkpoint: Path, recorded_sha256: str) -> str | None:
    """Why a finished result's checkpoint cannot be reused, or None when it is the file that was recorded."""
    if not checkpoint.is_file():
        return f"its checkpoint {checkpoint} is missing"
    if file_sha256(checkpoint) != recorded_sha256:
        return f"its checkpoint {checkpoint} does not match the sha256 recorded when it was written (truncated or replaced)"
    return None


def _readable_checkpoint(checkpoint: Path) -> str | None:
    """Why a partial checkpoint cannot be resumed from, or None when it loads."""
    try:
        load_checkpoint(checkpoint)
    except CheckpointError as exc:
        return str(exc)
    return None


def _kept(checkpoint: Path, epochs: int) -> str:
    """What a failed training keeps for the next materialization, in a sentence for the failure message."""
    if not checkpoint.is_file():
        return "No epoch was checkpointed yet: training starts from the beginning."
    try:
        epoch = load_checkpoint(checkpoint)["epoch"]
    except CheckpointError as exc:
        return f"The checkpoint {checkpoint} cannot be read ({exc}): training starts afresh."
    if epoch >= epochs:
        return (f"Training finished: its checkpoint (epoch {epoch} of {epochs}) is kept in {checkpoint}, and "
                "re-materializing logs it without training again.")
    return f"The checkpoint of epoch {epoch} of {epochs} is kept in {checkpoint}: training resumes from it."


def _log_unlogged_epochs(client: MlflowClient, run_id: str, records: list[dict[str, float]]) -> None:
    """Log the checkpointed epochs whose metrics never reached the run (the server or the process died in between)."""
    logged = {m.step for m in client.get_metric_history(run_id, "val_neg_elbo")}
    for record in records:
        if int(record["epoch"]) not in logged:
            MlflowEpochLogger().on_epoch_end(int(record["epoch"]), record)


def _registered_version_ok(client: MlflowClient, summary: TrainedModel) -> bool:
    """The summary's registered version exists on this server and belongs to the summary's run."""
    version = version_of_run(client, summary.model_name, summary.mlflow_run_id)
    return version is not None and version == summary.model_version


def _read_summary(path: Path, role: str) -> tuple[TrainedModel | None, str | None]:
    """A finished training's summary.json (None when there is none, see `_read_json`), or why it cannot be read.

    A summary of an older release that lacks a field (the checkpoint's hash, say) cannot vouch for its
    checkpoint: the model is trained again.
    """
    stored = _read_json(path)
    if stored is None:
        return None, None
    try:
        return read_manifest("vae_model" if role == "vae" else "autoencoder_baseline", stored), None
    except ManifestError as exc:
        return None, f"its summary {path} was written by another release ({exc})"


def _log_run_contents(
    *, model_cfg: ModelConfig, train_cfg: TrainConfig, device: torch.device, store_path: Path, n_train: int,
    n_val: int, dataset: str, data_version: str, variant: str,
) -> None:
    """What every training run records: its params and its input dataset (the active run)."""
    mlflow.log_params({**flat_params("model", to_dict(model_cfg)), **flat_params("train", to_dict(train_cfg))})
    mlflow.log_params({"device": str(device), "n_train": n_train, "n_val": n_val, "variant": variant})
    log_dataset(store_path, dataset, data_version, "training")


def _finish_run(
    client: MlflowClient, run_id: str, checkpoint: Path, example: np.ndarray, register_as: str | None
) -> int | None:
    """Attach the checkpoint and the logged model to the run; register it once; returns the registered version."""
    mlflow.log_artifact(str(checkpoint), artifact_path="checkpoint")
    if register_as is None:
        return None
    version = version_of_run(client, register_as, run_id)  # a crash after registering must not register twice
    if version is None:
        model_uri = logged_model_of_run(run_id) or log_encoder_model(checkpoint, example).model_uri
        version = register_version(client, register_as, model_uri, run_id)
    client.set_registered_model_alias(register_as, CHALLENGER, str(version))
    return version


def _train_tracked(
    context: dg.AssetExecutionContext,
    *,
    role: str,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    device: torch.device,
    mnist_tensors: MnistTensors,
    storage: PipelineStorage,
    mlflow_tracking: MlflowTracking,
    register_as: str | None,
) -> TrainedModel:
    """Train (or resume, or reuse) one model inside one MLflow run; returns its manifest.

    A finished result for the same fingerprint is reused only after checking what it is made of:
    the checkpoint must be the file whose sha256 was recorded, and its MLflow run (and registered
    version) must exist on the current tracking server. A missing or damaged checkpoint means
    retraining; a run missing from the server (a lost store, another MLFLOW_TRACKING_URI) means
    logging the trained model there anew; a missing version means registering it, once. A
    checkpoint left by an interrupted materialization is resumed and its MLflow run continued.
    """
    # Both checks come before anything is written: a bad batch size or tracking URI leaves no folder.
    _validate_against_data(train_cfg, mnist_tensors.counts["train"])
    client = mlflow_tracking.activate()  # fails fast on an unreachable tracking server
    data_version = mnist_tensors.content_sha256
    fingerprint = _fingerprint(model_cfg, train_cfg, data_version, device)
    folder = storage.working_folder("models", role, fingerprint)  # a resume may run on another worker than the interrupted step
    summary_path, run_path, checkpoint = folder / "summary.json", folder / "mlflow_run.json", folder / "checkpoint.pt"
    store_path = storage.resolve(mnist_tensors.path)
    experiment_id = mlflow_tracking.experiment_id(client)
    tags = {
        "role": role,
        "dagster.run_id": context.run.run_id,
        "dagster.asset_key": context.asset_key.to_user_string(),
        "code_version": TRAINING_CODE_VERSION,
        "data_version": data_version,
        "fingerprint": fingerprint,
        "dataset": mnist_tensors.dataset,
        "variant": context.partition_key,
    }

    def manifest(summary: TrainedModel, reused: bool) -> TrainedModel:
        return dataclasses.replace(summary, variant=context.partition_key, reused=reused,
                                   mlflow_run_url=mlflow_tracking.run_url(experiment_id, summary.mlflow_run_id))

    summary, unreadable = _read_summary(summary_path, role)
    run_id: str | None = None
    if summary is not None or unreadable is not None:
        problem = unreadable or _checkpoint_problem(checkpoint, summary.checkpoint_sha256)
        if problem is not None:
            context.log.warning(f"{role} {fingerprint}: not reusing the finished model: {problem}; retraining from scratch")
            storage.discard(summary_path)
            storage.discard(checkpoint)
            storage.discard(run_path)  # that run is finished (perhaps the champion's): never reopen it
            summary = None
        elif not run_exists(client, summary.mlflow_run_id):
            context.log.warning(
                f"{role} {fingerprint}: MLflow run {summary.mlflow_run_id} is not on {mlflow_tracking.uri()} "
                "(a lost store or another tracking server); logging the trained model there anew, without retraining"
            )
        elif register_as is not None and not _registered_version_ok(client, summary):
            context.log.warning(
                f"{role} {fingerprint}: {register_as} has no version of run {summary.mlflow_run_id}; registering it"
            )
            run_id = summary.mlflow_run_id
        else:
            context.log.info(f"{role}: config, data and code unchanged since {summary.mlflow_run_id}; not retraining")
            for path in (checkpoint, run_path, summary_path):  # a publication cut short (nothing to do otherwise)
                if path.is_file():
                    storage.publish(path)
            return manifest(summary, reused=True)
    else:
        record = _read_json(run_path)
        run_id = record["run_id"] if record else None
        broken = _readable_checkpoint(checkpoint) if checkpoint.exists() else None
        if broken is not None:
            context.log.warning(f"{role} {fingerprint}: cannot resume: {broken} Starting afresh.")
            storage.discard(checkpoint)
            mlflow_tracking.end_if_running(client, run_id, "FAILED")
            run_id = None
        elif run_id is not None and not run_exists(client, run_id):
            context.log.warning(f"{role} {fingerprint}: MLflow run {run_id} of the interrupted training is not on "
                                f"{mlflow_tracking.uri()}; continuing in a new run")
            run_id = None
        elif run_id is not None and checkpoint.is_file():
            context.log.info(f"{role}: resuming from {checkpoint} (MLflow run {run_id})")

    store = load_tensor_store(store_path)
    example = store["test"].float_images()[:4].reshape(4, -1).numpy()  # (4, 784)
    with tracked_run(
        mlflow_tracking,
        f"training of {role} {fingerprint}",
        kept=lambda: _kept(checkpoint, train_cfg.epochs),
        run_id=run_id,
        experiment_id=None if run_id else experiment_id,
        run_name=None if run_id else f"{role}-{fingerprint[:8]}",
        tags=tags,
        log_system_metrics=summary is None,
    ) as run:
        write_json_atomic(run_path, {"run_id": run.info.run_id})
        storage.publish(run_path)
        if run_id is None:
            _log_run_contents(model_cfg=model_cfg, train_cfg=train_cfg, device=device, store_path=store_path,
                              n_train=len(store["train"]), n_val=len(store["val"]), dataset=mnist_tensors.dataset,
                              data_version=data_version, variant=context.partition_key)
        if summary is None:
            if run_id is not None and checkpoint.is_file():
                _log_unlogged_epochs(client, run_id, load_checkpoint(checkpoint)["history"])
            model = build_model(model_cfg, seed=train_cfg.seed)
            history = fit(
                model,
                store["train"].images.unsqueeze(1),  # (n, 1, 28, 28) uint8: fit scales each batch as it is drawn
                store["val"].float_images(),
                train_cfg,
                device,
                # Published before MLflow hears of the epoch: when the server has gone, the epoch is kept all the same.
                callbacks=[PublishCheckpoint(storage, checkpoint), DagsterProgressLogger(context.log, role), MlflowEpochLogger()],
                checkpoint_path=checkpoint,
            )
            records, train_seconds = list(history), sum(r["seconds"] for r in history)
        else:  # re-logging a finished model to this server: its history comes from the checkpoint
            records, train_seconds = load_checkpoint(checkpoint)["history"], summary.train_seconds
            if run_id is None:
                _log_unlogged_epochs(client, run.info.run_id, records)
        model_version = _finish_run(client, run.info.run_id, checkpoint, example, register_as)
    summary = TrainedModel(
        role=role,
        checkpoint=storage.relative(checkpoint),
        checkpoint_sha256=file_sha256(checkpoint),
        store_path=storage.relative(store_path),
        fingerprint=fingerprint,
        model_config=model_cfg,
        train_config=train_cfg,
        device=str(device),
        data_version=data_version,
        dataset=mnist_tensors.dataset,
        variant=context.partition_key,
        mlflow_run_id=run.info.run_id,
        mlflow_experiment_id=experiment_id,
        model_name=register_as,
        model_version=model_version,
        final_metrics={k: float(v) for k, v in records[-1].items()},
        train_seconds=train_seconds,
    )
    storage.publish(checkpoint)
    write_json_atomic(summary_path, write_manifest(summary))  # written last: its presence means "finished"
    storage.publish(summary_path)
    return manifest(summary, reused=False)


def _metadata(manifest: TrainedModel) -> dict[str, Any]:
    final = manifest.final_metrics
    metadata: dict[str, Any] = {
        "mlflow_run_id": manifest.mlflow_run_id,
        "mlflow_run": dg.MetadataValue.url(manifest.mlflow_run_url),
        "checkpoint": manifest.checkpoint,
        "fingerprint": manifest.fingerprint,
        "device": manifest.device,
        "reused": manifest.reused,
        "epochs": int(final["epoch"]),
        "train_seconds": round(manifest.train_seconds, 1),
        "val_neg_elbo": round(final["val_neg_elbo"], 3),
        "val_recon_nll": round(final["val_recon_nll"], 3),
        "val_kl": round(final["val_kl"], 3),
    }
    if manifest.model_version is not None:
        metadata["model_name"] = manifest.model_name
        metadata["model_version"] = manifest.model_version
    return metadata


@dg.asset(group_name=GROUP, partitions_def=VARIANTS, code_version=TRAINING_CODE_VERSION, kinds={"pytorch", "mlflow"}, automation_condition=on_new_data(),
          pool="gpu")  # trains on the accelerator: a deployment with the daemon runs one such step at a time
def vae_model(
    context: dg.AssetExecutionContext,
    config: VaeTrainingConfig,
    storage: PipelineStorage,
    mlflow_tracking: MlflowTracking,
    mnist_tensors: MnistTensors,
) -> dg.MaterializeResult:
    """The trained VAE of one variant: checkpoint, MLflow run, and a new registered model version (alias challenger)."""
    variant = variant_of(context)
    # Invalid config fails here, before any work.
    model_cfg, train_cfg = variant_configs(config, variant)
    device = resolve_device(config.device)
    counts = mnist_tensors.counts
    check_training_fits(model_cfg, train_cfg, counts["train"] + counts["val"], f"vae_model[{variant.key}]")
    manifest = _train_tracked(
        context,
        role="vae",
        model_cfg=model_cfg,
        train_cfg=train_cfg,
        device=device,
        mnist_tensors=mnist_tensors,
        storage=storage,
        mlflow_tracking=mlflow_tracking,
        register_as=f"{mlflow_tracking.registered_model_prefix}-{mnist_tensors.dataset}",
    )
    with mlflow_writes(mlflow_tracking, f"the description of {manifest.model_name} v{manifest.model_version}",
                       run_id=manifest.mlflow_run_id):
        describe_version(mlflow_tracking.activate(), manifest, mlflow_tracking.dagster_run_url)  # reused versions too
    # The fingerprint (config, data, code, device) is the data version: downstream updates exactly when it changes.
    return dg.MaterializeResult(value=manifest, metadata=_metadata(manifest), data_version=dg.DataVersion(manifest.fingerprint))


@dg.asset(group_name=GROUP, partitions_def=VARIANTS, code_version=TRAINING_CODE_VERSION, kinds={"pytorch", "mlflow"}, automation_condition=on_new_data(),
          pool="gpu")  # trains on the accelerator: a deployment with the daemon runs one such step at a time
def autoencoder_baseline(
    context: dg.AssetExecutionContext,
    storage: PipelineStorage,
    mlflow_tracking: MlflowTracking,
    mnist_tensors: MnistTensors,
    vae_model: TrainedModel,
) -> dg.MaterializeResult:
    """A plain deterministic auto-encoder with the VAE's architecture and optimiser, for comparison."""
    model_cfg = dataclasses.replace(vae_model.model_config, variational=False)
    train_cfg = vae_model.train_config
    manifest = _train_tracked(
        context,
        role="autoencoder",
        model_cfg=model_cfg,
        train_cfg=train_cfg,
        device=torch.device(vae_model.device),
        mnist_tensors=mnist_tensors,
        storage=storage,
        mlflow_tracking=mlflow_tracking,
        register_as=None,
    )
    # The fingerprint (config, data, code, device) is the data version: downstream updates exactly when it changes.
    return dg.MaterializeResult(value=manifest, metadata=_metadata(manifest), data_version=dg.DataVersion(manifest.fingerprint))
