"""Manifests: each asset's output type, written and read in one place; the plain dicts of the previous release still read."""

from __future__ import annotations

import dataclasses
import json

import pytest

from vae_pipeline.core.model.config import ModelConfig, TrainConfig
from vae_pipeline.defs.manifests import (
    MANIFEST_TYPES,
    TYPE_KEY,
    ChampionModel,
    ManifestError,
    MnistRaw,
    RawFile,
    TrainedModel,
    VersionComparison,
    read_manifest,
    write_manifest,
)

# vae_model's manifest as the release before typed manifests wrote it (manifests/vae_model/<variant>/<run id>.json).
OLD_VAE_MODEL = json.loads("""{
  "role": "vae", "checkpoint": "models/vae/3f2a9c1d0e4b5a67/checkpoint.pt",
  "checkpoint_sha256": "9b1c6e0f5d2a4c8e7f3b1a0d9c8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e",
  "store_path": "tensors/mnist/4d5e6f.safetensors", "fingerprint": "3f2a9c1d0e4b5a67",
  "model_config": {"architecture": "mlp", "hidden_dims": [64], "latent_dim": 2, "likelihood": "bernoulli",
                   "gaussian_sigma": null, "variational": true, "image_shape": [1, 28, 28], "conv_channels": [32, 64]},
  "train_config": {"epochs": 1, "batch_size": 64, "learning_rate": 0.001, "beta": 1.0, "kl_warmup_epochs": 0,
                   "free_bits": 0.0, "mc_samples": 1, "binarization": "dynamic", "seed": 0, "amp": true,
                   "grad_clip_norm": null},
  "device": "cpu", "data_version": "4d5e6f", "dataset": "mnist", "variant": "z2-b1-bern",
  "mlflow_run_id": "0a1b2c3d", "mlflow_experiment_id": "1", "model_name": "vae-mnist", "model_version": 3,
  "final_metrics": {"epoch": 1.0, "val_neg_elbo": 180.5, "val_recon_nll": 175.0, "val_kl": 5.5, "seconds": 2.0},
  "train_seconds": 2.0, "reused": false, "mlflow_run_url": "http://127.0.0.1:5000/#/experiments/1/runs/0a1b2c3d"
}""")


def test_a_manifest_of_the_previous_release_reads_as_its_type() -> None:
    model = read_manifest("vae_model", OLD_VAE_MODEL)
    assert isinstance(model, TrainedModel)
    assert model.model_version == 3 and model.checkpoint_sha256.startswith("9b1c") and model.reused is False
    # The configs come back as the core's dataclasses, validated, tuples restored.
    assert model.model_config == ModelConfig(hidden_dims=(64,), latent_dim=2)
    assert model.train_config == TrainConfig(epochs=1, batch_size=64)
    # Written again, it is the same dict plus the type tag.
    assert write_manifest(model) == {TYPE_KEY: "TrainedModel", **OLD_VAE_MODEL}


def test_a_previous_manifest_without_a_required_field_names_the_asset_to_rematerialize() -> None:
    old = {k: v for k, v in OLD_VAE_MODEL.items() if k != "checkpoint_sha256"}
    with pytest.raises(ManifestError, match=r"missing fields \['checkpoint_sha256'\].*re-materialize vae_model"):
        read_manifest("vae_model", old)


def test_a_manifest_tagged_as_another_type_is_refused() -> None:
    stored = write_manifest(ChampionModel(model_name="vae-mnist", model_version=2, previous_version=1, model_uri="models:/x"))
    with pytest.raises(ManifestError, match="is a ChampionModel, not a TrainedModel; re-materialize vae_model"):
        read_manifest("vae_model", stored)


def test_a_tagged_manifest_with_an_unknown_field_is_refused_an_untagged_one_is_read() -> None:
    stored = {**write_manifest(read_manifest("vae_model", OLD_VAE_MODEL)), "surprise": 1}
    with pytest.raises(ManifestError, match="unknown fields"):
        read_manifest("vae_model", stored)
    assert read_manifest("vae_model", {**OLD_VAE_MODEL, "dropped_since": 1}).model_version == 3


def test_nested_manifests_and_optional_fields_round_trip() -> None:
    raw = MnistRaw(dataset="mnist", source="configured", directory="/data/mnist", verify_md5=True,
                   files={"train_images": RawFile(path="a.gz", md5="m", content_md5="c", verified=True)},
                   counts={"train": 60000, "test": 10000})
    stored = json.loads(json.dumps(write_manifest(raw)))  # as the IO manager stores it
    assert stored["files"]["train_images"] == {"path": "a.gz", "md5": "m", "content_md5": "c", "verified": True}
    assert read_manifest("mnist_raw", stored) == raw
    skipped = VersionComparison(compared=False, candidate_version=4, reason="no champion yet")
    assert read_manifest("version_comparison", json.loads(json.dumps(write_manifest(skipped)))) == skipped


def test_every_asset_type_is_a_frozen_dataclass() -> None:
    for asset, cls in MANIFEST_TYPES.items():
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, asset


def test_every_materializable_asset_has_a_manifest_type() -> None:
    from vae_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    materializable = {key.to_user_string() for key in graph.materializable_asset_keys}
    assert materializable == set(MANIFEST_TYPES)
