"""Exact data lineage: a model's downstream assets read the tensor store it was trained on, or fail saying so."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from vae_pipeline.core.data.tensor_store import load_tensor_store
from vae_pipeline.definitions import defs
from vae_pipeline.defs.identity.lineage import LineageError, load_model_store
from vae_pipeline.defs.manifests import DigitClassifier, MnistTensors
from vae_pipeline.defs.resources import default_resources
from vae_pipeline.defs.storage.folder import PipelineStorage
from vae_pipeline_tests.helpers import TINY_TRAINING
from vae_pipeline_tests.variants import TINY_VARIANT, add_variants

pytestmark = pytest.mark.slow

SELECTION = ["mnist_raw", "mnist_tensors", "vae_model", "latent_embeddings"]


def ingest_and_embed(data_dir: Path, source_dir: Path, split_seed: int) -> dg.ExecuteInProcessResult:
    uri = f"sqlite:///{data_dir / 'mlflow.db'}"
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=SELECTION,
        run_config={"ops": {
            "mnist_raw": {"config": {"source_dir": str(source_dir), "verify_md5": False, "allow_download": False}},
            "mnist_tensors": {"config": {"val_size": 200, "split_seed": split_seed}},
            "vae_model": {"config": TINY_TRAINING},
        }},
        resources=default_resources(str(data_dir), tracking_uri=uri),
        instance=add_variants(dg.DagsterInstance.ephemeral(), TINY_VARIANT),
        partition_key=TINY_VARIANT,
    )
    assert result.success
    return result


def manifest(result: dg.ExecuteInProcessResult, node: str) -> Any:
    return result.output_for_node(node)


def test_the_older_model_is_evaluated_on_the_older_store(tmp_path: Path, mnist_slice_dir: Path) -> None:
    first = ingest_and_embed(tmp_path, mnist_slice_dir, split_seed=0)
    second = ingest_and_embed(tmp_path, mnist_slice_dir, split_seed=1)
    store_a, store_b = manifest(first, "mnist_tensors").path, manifest(second, "mnist_tensors").path
    assert store_a != store_b and (tmp_path / store_a).is_file() and (tmp_path / store_b).is_file()  # side by side
    assert [manifest(r, "vae_model").model_version for r in (first, second)] == [1, 2]

    # The older model again (same config and split seed 0): reused, and its latents come from store A.
    again = ingest_and_embed(tmp_path, mnist_slice_dir, split_seed=0)
    vae = manifest(again, "vae_model")
    assert vae.reused is True and vae.model_version == 1 and vae.store_path == store_a
    rows = pd.read_parquet(tmp_path / "latents" / "vae-mnist", filters=[("model_version", "==", 1)])
    val_ids = set(rows.loc[rows.split == "val", "image_id"])
    store = load_tensor_store(tmp_path / store_a)
    assert val_ids == {f"train-{i:05d}" for i in store["val"].index.tolist()}
    other = load_tensor_store(tmp_path / store_b)
    assert val_ids != {f"train-{i:05d}" for i in other["val"].index.tolist()}


def test_a_store_with_other_data_at_the_models_path_is_refused(tmp_path: Path, mnist_slice_dir: Path) -> None:
    first = ingest_and_embed(tmp_path, mnist_slice_dir, split_seed=0)
    second = ingest_and_embed(tmp_path, mnist_slice_dir, split_seed=1)
    vae = manifest(first, "vae_model")
    shutil.copy(tmp_path / manifest(second, "mnist_tensors").path, tmp_path / vae.store_path)  # another run's store
    with pytest.raises(LineageError, match=r"holds data version .* but vae .* was trained on"):
        load_model_store(PipelineStorage(data_dir=str(tmp_path)), vae)
    (tmp_path / vae.store_path).unlink()
    with pytest.raises(LineageError, match="which is gone; re-materialize mnist_tensors"):
        load_model_store(PipelineStorage(data_dir=str(tmp_path)), vae)


def test_a_judge_trained_on_other_data_is_refused_by_name() -> None:
    from vae_pipeline.defs.identity.lineage import check_judge_data

    judge = DigitClassifier(checkpoint="models/judge/f/judge.safetensors", checkpoint_sha256="c", fingerprint="f",
                            data_version="a" * 64, store_path="tensors/mnist/a.safetensors", test_accuracy=0.99, config={})
    tensors = MnistTensors(path="tensors/mnist/b.safetensors", dataset="mnist", content_sha256="b" * 64, val_size=200,
                           split_seed=0, counts={})
    with pytest.raises(LineageError, match=r"judge was trained on data version aaaaaaaaaaaa, but this run's mnist_tensors is bbbbbbbbbbbb"):
        check_judge_data(judge, tensors)
    check_judge_data(dataclasses.replace(judge, data_version="b" * 64), tensors)  # the same data: no error
