"""Registered model versions as things to evaluate and compare: "champion", "challenger", "7", or the one just trained.

A reference names a version of the dataset's registered model (vae-<dataset>): an alias or a
version number; the empty reference means the version this run's `vae_model` produced. The
registry is the source of truth: a referenced version's checkpoint is downloaded from its MLflow
run, and its run's tags say what data it was trained on, so lineage is checked the same way as
for the model just trained.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vae_pipeline.core.model.checkpoint import load_model
from vae_pipeline.core.model.config import ConfigError
from vae_pipeline.core.model.vae import VAE
from vae_pipeline.core.selection.sweep import Variant
from vae_pipeline.defs.identity.lineage import load_trained_model
from vae_pipeline.defs.manifests import TrainedModel
from vae_pipeline.defs.storage.folder import PipelineStorage
from vae_pipeline.defs.tracking.models import download_checkpoint, version_by_alias

JUST_TRAINED = ""  # the reference meaning "the version this run's vae_model produced"
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class VersionError(ConfigError):
    """A version reference (config) is malformed or names no version; the message says which exist."""


def parse_version_ref(ref: str) -> int | str | None:
    """None for the version just trained, an int for a version number, a str for an alias."""
    ref = ref.strip()
    if ref == JUST_TRAINED:
        return None
    if ref.isdigit() and int(ref) >= 1:
        return int(ref)
    if _ALIAS.fullmatch(ref) and not re.fullmatch(r"[vV]\d+", ref):  # "v7" is a version written like an alias
        return ref
    raise VersionError(
        f"model version reference {ref!r} is neither a version number (e.g. 7, without a 'v'), an alias "
        "(e.g. champion) nor empty (the version just trained)."
    )


def _known(client: MlflowClient, name: str) -> str:
    try:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
        aliases = client.get_registered_model(name).aliases
    except MlflowException:
        return f"{name} is not registered yet"
    listed = ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items())) or "none"
    return f"{name} has versions {versions or 'none'}; aliases: {listed}"


def find_version(client: MlflowClient, name: str, ref: int | str) -> Any | None:
    """The registered version `ref` names (ModelVersion), or None when it is an alias no version holds yet.

    A version number that does not exist is an error: it is a typo, not a state the registry grows into.
    """
    if isinstance(ref, str):
        return version_by_alias(client, name, ref)
    try:
        return client.get_model_version(name, str(ref))
    except MlflowException as exc:
        raise VersionError(f"{name} has no version {ref}: {_known(client, name)}.") from exc


@dataclass(frozen=True)
class RegisteredVersion:
    """What the registry says of a version this run did not train: its run's tags (the fields TrainedModel shares)."""

    role: str
    fingerprint: str  # "?" for a run that did not record it
    data_version: str
    dataset: str
    model_name: str
    model_version: int
    mlflow_run_id: str
    checkpoint_sha256: str | None = None  # unknown: the checkpoint is downloaded from the run, not recorded


@dataclass(frozen=True)
class Evaluated:
    """A model to evaluate or compare, with the record the assets use for lineage and outputs."""

    record: TrainedModel | RegisteredVersion
    model: VAE

    @property
    def label(self) -> str:
        return f"v{self.record.model_version}"


def just_trained(storage: PipelineStorage, vae_model: TrainedModel, device: torch.device) -> Evaluated:
    """This run's vae_model, from its local checkpoint."""
    return Evaluated(record=vae_model, model=load_trained_model(storage, vae_model, device))


def registered(client: MlflowClient, name: str, version: Any, device: torch.device) -> Evaluated:
    """A registered VAE version, its checkpoint downloaded from the MLflow run that trained it."""
    run = client.get_run(version.run_id)
    tags = run.data.tags
    if tags.get("role") != "vae" or "data_version" not in tags:
        raise VersionError(
            f"{name} v{version.version} comes from run {version.run_id}, which is not a VAE training run of this pipeline "
            f"(tags role={tags.get('role')!r}, data_version={'present' if 'data_version' in tags else 'missing'})."
        )
    with tempfile.TemporaryDirectory() as folder:
        model = load_model(download_checkpoint(client, version.run_id, Path(folder)), device, variational=True)
    record = RegisteredVersion(
        role="vae",
        fingerprint=tags.get("fingerprint", "?"),
        data_version=tags["data_version"],
        dataset=tags.get("dataset", "?"),
        model_name=name,
        model_version=int(version.version),
        mlflow_run_id=version.run_id,
    )
    return Evaluated(record=record, model=model)


def resolve(
    client: MlflowClient, storage: PipelineStorage, vae_model: TrainedModel, ref: str, device: torch.device
) -> Evaluated | None:
    """The model `ref` names among vae_model's registered versions; None for an alias nobody holds yet."""
    parsed = parse_version_ref(ref)
    if parsed is None:
        return just_trained(storage, vae_model, device)
    name = vae_model.model_name
    version = find_version(client, name, parsed)
    if version is None:
        return None
    if int(version.version) == vae_model.model_version:
        return just_trained(storage, vae_model, device)  # the same model: no download
    return registered(client, name, version, device)


def variant_of_version(client: MlflowClient, version: Any) -> str | None:
    """The variant key of a registered version: its `variant` tag, else rebuilt from its run's params (older versions)."""
    if "variant" in version.tags:
        return version.tags["variant"]
    params = client.get_run(version.run_id).data.params
    try:
        return Variant(int(params["model.latent_dim"]), float(params["train.beta"]), params["model.likelihood"]).key
    except (KeyError, ValueError, ConfigError):
        return None


def versions_of_variant(client: MlflowClient, name: str, variant: str) -> list[int]:
    """The registered versions of `name` that are models of `variant`, in order."""
    found = client.search_model_versions(f"name='{name}'")
    return sorted(int(v.version) for v in found if variant_of_version(client, v) == variant)
