"""What each asset hands downstream, as types: one frozen dataclass per asset output, written and read here only.

An asset returns one of these as its value; `ManifestIOManager` stores it as JSON with `write_manifest`
and hands it to downstream assets with `read_manifest`, which reuse records (defs/reuse.py) use too.
Readers use attributes, so a renamed or missing field fails where it is read, not three assets later.

The stored JSON is the dataclass's fields plus a type tag (`TYPE_KEY`). A manifest written by the
release before this module (the plain dict, no tag) is read by mapping its keys onto the fields;
one that lacks a field the type requires fails with a message naming the asset to re-materialize.

Paths in manifests are relative to the data folder (movable), except a raw source folder outside it.
A `protocol` field holds `MeasurementProtocol.to_dict()` (core/selection/protocol.py), the one record of how a
figure was measured; readers rebuild it with `MeasurementProtocol.from_dict`, which also reads the shapes an
earlier release stored (a manifest cannot: an old evaluation's protocol needs facts from its caller).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from vae_pipeline.core.model.config import ModelConfig, TrainConfig, from_dict, to_dict

TYPE_KEY = "manifest_type"  # the stored JSON's type tag; absent in manifests of the previous release


class ManifestError(ValueError):
    """A stored manifest does not read as its asset's type; the message names the asset to re-materialize."""


@dataclass(frozen=True)
class RawFile:
    """One IDX file of `mnist_raw`."""

    path: str  # relative to the data folder when inside it, else absolute (the user's own source folder)
    md5: str  # of the file as stored (gzipped or not)
    content_md5: str  # of the decompressed content: equal for a .gz and its unpacked copy
    verified: bool  # matches the official md5 sum


@dataclass(frozen=True)
class MnistRaw:
    """`mnist_raw`: where the four IDX files are and what they hold."""

    dataset: str  # "mnist" or "fashion_mnist"
    source: str  # how they were found: configured folder, environment variable, data folder or download
    directory: str  # as RawFile.path
    verify_md5: bool
    files: dict[str, RawFile]  # train_images, train_labels, test_images, test_labels
    counts: dict[str, int]  # images per split: train, test


@dataclass(frozen=True)
class MnistTensors:
    """`mnist_tensors`: the content-addressed tensor store."""

    path: str
    dataset: str
    content_sha256: str  # the data version every model records
    val_size: int
    split_seed: int
    counts: dict[str, int]  # images per split: train, val, test


@dataclass(frozen=True)
class DigitClassifier:
    """`digit_classifier`: the judge; also its summary.json beside the checkpoint (there `reused` is False)."""

    checkpoint: str
    checkpoint_sha256: str
    fingerprint: str  # config, data, code and device type: the judge's identity and data version
    data_version: str
    store_path: str
    test_accuracy: float
    config: dict[str, Any]  # JudgeConfig as a dict
    reused: bool = False  # this materialization found the judge trained before


@dataclass(frozen=True)
class TrainedModel:
    """`vae_model` and `autoencoder_baseline`: one trained model; also its summary.json (without the last two fields)."""

    role: str  # "vae" or "autoencoder"
    checkpoint: str
    checkpoint_sha256: str
    store_path: str  # the tensor store it was trained on
    fingerprint: str  # config, data, code and device type: the training's identity and data version
    model_config: ModelConfig
    train_config: TrainConfig
    device: str
    data_version: str
    dataset: str
    variant: str  # the partition key
    mlflow_run_id: str
    mlflow_experiment_id: str
    model_name: str | None  # the registered model; None for the auto-encoder (not registered)
    model_version: int | None
    final_metrics: dict[str, float]  # the last epoch's record (epoch, val_neg_elbo, ...)
    train_seconds: float
    reused: bool = False  # this materialization found the model trained before
    mlflow_run_url: str | None = None  # on the tracking server of the materialization that handed it on


@dataclass(frozen=True)
class LatentEmbeddings:
    """`latent_embeddings`: one model version's latents table, in the model's folder of tables."""

    path: str
    folder: str  # every version's table: read it with a model_version filter
    model_name: str
    model_version: int
    rows: dict[str, int]  # per split


@dataclass(frozen=True)
class PriorSamples:
    """`prior_samples`: decoded prior draws and interpolations of one model version."""

    tensor_path: str
    grid_png: str
    interpolations_png: str
    model_version: int


@dataclass(frozen=True)
class ReconstructionReport:
    """`reconstruction_report`: per-class test reconstruction errors of one model version."""

    errors_parquet: str
    per_class_csv: str
    galleries: dict[str, str]  # "worst", "best": PNG paths
    model_version: int
    previous_version: int | None  # the variant's version it is compared with, None for its first


@dataclass(frozen=True)
class LatentEvaluation:
    """`latent_evaluation`: the test-split report of one model version; also its metrics.json."""

    metrics: dict[str, float]  # every eval_* figure, as logged to MLflow
    verdict: str
    regular: bool  # the VAE's latent space is more regular than the auto-encoder's
    regularity: dict[str, Any]  # "vae", "ae": RegularityFigures.as_dict()
    kl_per_dimension: list[float]
    latent_dim: int
    config: dict[str, Any]  # EvaluationConfig as a dict
    protocol: dict[str, Any]  # MeasurementProtocol.to_dict(): how the test figures were measured
    model_name: str
    model_version: int
    mlflow_run_id: str


@dataclass(frozen=True)
class ChampionComparison:
    """`champion_comparison`: the challenger's validation figures beside the champion's, and the gates' outcomes."""

    protocol: dict[str, Any]  # MeasurementProtocol.to_dict(): how both sides were measured
    challenger: dict[str, float]  # iwae_nll, iwae_nll_se, probe_accuracy, active_units
    champion_version: int | None
    champion: dict[str, float] | None
    champion_source: str | None  # how the champion's figures were obtained
    incomparable: str | None  # why no comparison was made
    model_name: str
    model_version: int
    latent_dim: int
    gates: dict[str, list[Any]]  # gate name -> [passed, text]


@dataclass(frozen=True)
class ChampionModel:
    """`champion_model`: the version the champion alias points to after this materialization."""

    model_name: str
    model_version: int
    previous_version: int | None
    model_uri: str


@dataclass(frozen=True)
class VersionComparison:
    """`version_comparison`: two versions on the test split, or why they were not compared (then only the first three)."""

    compared: bool
    candidate_version: int
    reason: str | None = None  # why not compared
    protocol: dict[str, Any] | None = None  # MeasurementProtocol.to_dict(), each side scored in its likelihood
    config: dict[str, Any] | None = None  # ComparisonConfig as a dict
    baseline_version: int | None = None
    trained_on: dict[str, str] | None = None  # "baseline", "candidate": data versions
    baseline: dict[str, Any] | None = None  # VersionFigures.as_dict()
    candidate: dict[str, Any] | None = None
    likelihood_incomparable: str | None = None  # why the likelihood figures are not comparable, if they are not
    per_class_recon: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class SweepComparison:
    """`sweep_comparison`: the evaluated variants in one table and one picture."""

    path: str
    picture: str
    model_name: str
    variants: list[str]
    comparable: list[str]  # the variants measured like the reference one
    mlflow_run_id: str


# Each asset's type, by asset name: how the IO manager knows what a stored manifest should read as.
MANIFEST_TYPES: dict[str, type] = {
    "mnist_raw": MnistRaw,
    "mnist_tensors": MnistTensors,
    "digit_classifier": DigitClassifier,
    "vae_model": TrainedModel,
    "autoencoder_baseline": TrainedModel,
    "latent_embeddings": LatentEmbeddings,
    "prior_samples": PriorSamples,
    "reconstruction_report": ReconstructionReport,
    "latent_evaluation": LatentEvaluation,
    "champion_comparison": ChampionComparison,
    "champion_model": ChampionModel,
    "version_comparison": VersionComparison,
    "sweep_comparison": SweepComparison,
}
_BY_NAME = {cls.__name__: cls for cls in {*MANIFEST_TYPES.values(), RawFile}}
_UnionType = type(int | None)  # `X | None` annotations
_CONFIGS = (ModelConfig, TrainConfig)  # core configs: stored with to_dict, read with from_dict (validated)


def write_manifest(manifest: Any) -> dict[str, Any]:
    """The manifest as a JSON-able dict: its fields (nested ones too) and its type tag."""
    fields = {f.name: _plain(getattr(manifest, f.name)) for f in dataclasses.fields(manifest)}
    return {TYPE_KEY: type(manifest).__name__, **fields}


def _plain(value: Any) -> Any:
    if isinstance(value, _CONFIGS):
        return to_dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def read_manifest(asset: str, stored: dict[str, Any]) -> Any:
    """The manifest of `asset` (its type in MANIFEST_TYPES) from its stored dict: this release's, or the plain dict of the one before."""
    if asset not in MANIFEST_TYPES:
        raise ManifestError(f"{asset} has no manifest type; add its dataclass to MANIFEST_TYPES in defs/manifests.py.")
    cls = MANIFEST_TYPES[asset]
    tag = stored.get(TYPE_KEY)
    if tag is not None and tag != cls.__name__:
        raise ManifestError(f"the stored manifest of {asset} is a {tag}, not a {cls.__name__}; re-materialize {asset}.")
    try:
        return _build(cls, {k: v for k, v in stored.items() if k != TYPE_KEY}, strict=tag is not None)
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(
            f"the stored manifest of {asset} does not read as a {cls.__name__} ({exc}); it was written by another "
            f"release of vae-pipeline: re-materialize {asset}."
        ) from exc


def _build(cls: type, values: dict[str, Any], strict: bool) -> Any:
    """`cls` from a stored dict; an untagged (older) one may hold keys the type no longer has, which are ignored."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if strict and unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"missing fields {missing}")
    return cls(**{name: _typed(hints[name], value, strict) for name, value in values.items() if name in names})


def _typed(hint: Any, value: Any, strict: bool) -> Any:
    """A stored value as the field's type: nested manifests and core configs rebuilt, the rest as stored."""
    if value is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is dict and len(args) == 2 and args[1] in _BY_NAME.values():
        return {k: _build(args[1], v, strict) for k, v in value.items()}
    if origin in (typing.Union, _UnionType) and len(args) == 1:
        return _typed(args[0], value, strict)
    if hint in _CONFIGS:
        return from_dict(hint, value)
    if hint in _BY_NAME.values():
        return _build(hint, value, strict)
    return value

