"""The data assets and their checks, materialized into a temporary data folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from vae_pipeline.core import data
from vae_pipeline.defs.assets.ingest import mnist_raw, mnist_tensors
from vae_pipeline.defs.checks import DATA_CHECKS
from vae_pipeline.defs.resources import default_resources


def _materialize(data_dir: Path, source_dir: Path, *, verify_md5: bool, val_size: int, raise_on_error: bool = True):
    run_config = dg.RunConfig(
        {
            "mnist_raw": {"config": {"source_dir": str(source_dir), "verify_md5": verify_md5, "allow_download": False}},
            "mnist_tensors": {"config": {"val_size": val_size, "split_seed": 0}},
        }
    )
    return dg.materialize(
        [mnist_raw, mnist_tensors, *DATA_CHECKS],
        resources=default_resources(str(data_dir)),
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def _check_outcomes(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


class TestMaterializeSlice:
    def test_writes_store_manifest_and_metadata(self, mnist_slice_dir: Path, tmp_path: Path) -> None:
        result = _materialize(tmp_path, mnist_slice_dir, verify_md5=False, val_size=200)
        assert result.success
        store_path = tmp_path / "tensors" / "mnist.safetensors"
        store = data.load_tensor_store(store_path)
        assert {n: len(s) for n, s in store.splits.items()} == {"train": 1000, "val": 200, "test": 300}

        manifest = json.loads((tmp_path / "manifests" / "mnist_tensors" / f"{result.run_id}.json").read_text())
        assert manifest["path"] == str(store_path) and manifest["content_sha256"] == store.content_sha256

        mat = result.asset_materializations_for_node("mnist_tensors")[0]
        assert mat.metadata["content_sha256"].value == store.content_sha256
        assert mat.tags["dagster/data_version"] == store.content_sha256
        raw_mat = result.asset_materializations_for_node("mnist_raw")[0]
        assert raw_mat.metadata["all_official"].value is False

        # a slice passes the structural checks and fails, as a warning, the published histogram
        assert _check_outcomes(result) == {
            "tensors_shape": True,
            "tensors_value_range": True,
            "tensors_splits": True,
            "tensors_label_histogram": False,
        }

    def test_bad_input_fails_and_keeps_existing_store(self, mnist_slice_dir: Path, tmp_path: Path) -> None:
        assert _materialize(tmp_path, mnist_slice_dir, verify_md5=False, val_size=200).success
        store_path = tmp_path / "tensors" / "mnist.safetensors"
        before = store_path.read_bytes()

        broken = tmp_path / "broken"
        shutil.copytree(mnist_slice_dir, broken)
        (broken / "train-images-idx3-ubyte.gz").write_bytes(b"<html>rate limited</html>")
        with pytest.raises(data.DataError, match="is not gzip data"):
            _materialize(tmp_path, broken, verify_md5=False, val_size=200)
        assert store_path.read_bytes() == before

    def test_missing_configured_folder_is_an_error_not_a_fallback(self, tmp_path: Path) -> None:
        with pytest.raises(data.DataError, match="does not exist"):
            _materialize(tmp_path, tmp_path / "no-such-folder", verify_md5=True, val_size=200)
        assert not (tmp_path / "tensors").exists()


@pytest.mark.slow
class TestMaterializeFullMnist:
    def test_official_files_pass_every_check(self, mnist_dir: Path, tmp_path: Path) -> None:
        result = _materialize(tmp_path, mnist_dir, verify_md5=True, val_size=10_000)
        assert all(_check_outcomes(result).values()), _check_outcomes(result)
        raw_mat = result.asset_materializations_for_node("mnist_raw")[0]
        assert raw_mat.metadata["all_official"].value is True
