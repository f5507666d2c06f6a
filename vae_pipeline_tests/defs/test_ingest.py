"""The data assets and their checks, materialized into a temporary data folder."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from vae_pipeline.core.data import tensor_store
from vae_pipeline.core.data.idx import DataError
from vae_pipeline.defs.assets.ingest import mnist_raw, mnist_tensors
from vae_pipeline.defs.checks import DATA_CHECKS
from vae_pipeline.defs.manifests import MnistTensors
from vae_pipeline.defs.resources import default_resources
from vae_pipeline_tests.idx_files import write_bomb_set


@dg.asset
def after_tensors(mnist_tensors: MnistTensors) -> None:
    """Stands for the training asset: it runs only if no blocking check on the store failed."""


def _materialize(
    data_dir: Path,
    source_dir: Path,
    *,
    verify_md5: bool,
    val_size: int,
    split_seed: int = 0,
    raise_on_error: bool = True,
    downstream: bool = False,
) -> dg.ExecuteInProcessResult:
    run_config = dg.RunConfig(
        {
            "mnist_raw": {"config": {"source_dir": str(source_dir), "verify_md5": verify_md5, "allow_download": False}},
            "mnist_tensors": {"config": {"val_size": val_size, "split_seed": split_seed}},
        }
    )
    return dg.materialize(
        [mnist_raw, mnist_tensors, *DATA_CHECKS, *([after_tensors] if downstream else [])],
        resources=default_resources(str(data_dir)),
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def _check_outcomes(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def _manifest(data_dir: Path, asset: str, result: dg.ExecuteInProcessResult) -> dict:
    return json.loads((data_dir / "manifests" / asset / f"{result.run_id}.json").read_text())


class TestMaterializeSlice:
    def test_writes_store_manifest_and_metadata(self, mnist_slice_dir: Path, tmp_path: Path) -> None:
        result = _materialize(tmp_path, mnist_slice_dir, verify_md5=False, val_size=200)
        assert result.success
        manifest = _manifest(tmp_path, "mnist_tensors", result)
        # the manifest names the store relative to the data folder, by its content hash
        assert manifest["path"] == f"tensors/mnist/{manifest['content_sha256']}.safetensors"
        store = tensor_store.load_tensor_store(tmp_path / manifest["path"])
        assert store.content_sha256 == manifest["content_sha256"]
        assert {n: len(s) for n, s in store.splits.items()} == {"train": 1000, "val": 200, "test": 300}
        assert manifest["counts"] == {"train": 1000, "val": 200, "test": 300}
        assert (manifest["dataset"], manifest["val_size"], manifest["split_seed"]) == ("mnist", 200, 0)

        mat = result.asset_materializations_for_node("mnist_tensors")[0]
        assert mat.metadata["content_sha256"].value == store.content_sha256
        assert mat.metadata["store_write"].value == "written"
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
        result = _materialize(tmp_path, mnist_slice_dir, verify_md5=False, val_size=200)
        store_path = tmp_path / _manifest(tmp_path, "mnist_tensors", result)["path"]
        before = store_path.read_bytes()

        broken = tmp_path / "broken"
        shutil.copytree(mnist_slice_dir, broken)
        (broken / "train-images-idx3-ubyte.gz").write_bytes(b"<html>rate limited</html>")
        with pytest.raises(DataError, match="is not gzip data"):
            _materialize(tmp_path, broken, verify_md5=False, val_size=200)
        assert store_path.read_bytes() == before

    def test_missing_configured_folder_is_an_error_not_a_fallback(self, tmp_path: Path) -> None:
        with pytest.raises(DataError, match="does not exist"):
            _materialize(tmp_path, tmp_path / "no-such-folder", verify_md5=True, val_size=200)
        assert not (tmp_path / "tensors").exists()


class TestHostileInput:
    def test_gzip_bomb_fails_the_raw_asset(self, tmp_path: Path) -> None:
        bomb = write_bomb_set(tmp_path / "bomb", 1 << 30)
        with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz holds more than its header promises"):
            _materialize(tmp_path / "data", bomb, verify_md5=False, val_size=200)
        assert not (tmp_path / "data" / "tensors").exists()

    def test_labels_outside_the_classes_fail_with_md5_check_off(self, mnist_slice_dir: Path, tmp_path: Path) -> None:
        folder = tmp_path / "relabeled"
        shutil.copytree(mnist_slice_dir, folder)
        path = folder / "t10k-labels-idx1-ubyte.gz"
        payload = bytearray(gzip.decompress(path.read_bytes()))
        payload[-1] = 255  # the label: stored as -1 once wrapped to int8
        path.write_bytes(gzip.compress(bytes(payload)))
        with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz holds labels outside mnist's classes 0\.\.9: 255 \(1 label\)\."):
            _materialize(tmp_path / "data", folder, verify_md5=False, val_size=200)
        assert not (tmp_path / "data" / "tensors").exists()


class TestContentAddressedStore:
    def test_two_splits_live_side_by_side(self, mnist_slice_dir: Path, tmp_path: Path) -> None:
        first = _manifest(tmp_path, "mnist_tensors", _materialize(tmp_path, mnist_slice_dir, verify_md5=False, val_size=200))
        second = _manifest(
            tmp_path, "mnist_tensors", _materialize(tmp_path, mnist_slice_dir, verify_md5=False, val_size=200, split_seed=1)
        )
        assert first["path"] != second["path"]
        assert sorted(p.name for p in (tmp_path / "tensors" / "mnist").iterdir()) == sorted(
            Path(m["path"]).name for m in (first, second)
        )
        # the first model's store is still there, intact, with the split it was trained on
        old = tensor_store.load_tensor_store(tmp_path / first["path"])
        assert old.content_sha256 == first["content_sha256"] and old.metadata["split_seed"] == "0"
        assert tensor_store.load_tensor_store(tmp_path / second["path"]).metadata["split_seed"] == "1"

    def test_identical_content_is_written_once(self, mnist_slice_dir: Path, tmp_path: Path) -> None:
        first = _manifest(tmp_path, "mnist_tensors", _materialize(tmp_path, mnist_slice_dir, verify_md5=False, val_size=200))
        before = (tmp_path / first["path"]).stat()
        result = _materialize(tmp_path, mnist_slice_dir, verify_md5=False, val_size=200)
        again = _manifest(tmp_path, "mnist_tensors", result)
        after = (tmp_path / again["path"]).stat()
        assert again["path"] == first["path"]
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert result.asset_materializations_for_node("mnist_tensors")[0].metadata["store_write"].value == "reused"

    def test_a_damaged_store_is_rewritten_and_said_so(self, mnist_slice_dir: Path, tmp_path: Path) -> None:
        first = _manifest(tmp_path, "mnist_tensors", _materialize(tmp_path, mnist_slice_dir, verify_md5=False, val_size=200))
        path = tmp_path / first["path"]
        path.write_bytes(path.read_bytes()[:1000])
        result = _materialize(tmp_path, mnist_slice_dir, verify_md5=False, val_size=200)
        note = result.asset_materializations_for_node("mnist_tensors")[0].metadata["store_write"].value
        assert note.startswith("rewritten: tensor store") and str(path) in note
        assert tensor_store.load_tensor_store(path).content_sha256 == first["content_sha256"]

    def test_the_data_folder_can_move(self, mnist_slice_dir: Path, tmp_path: Path) -> None:
        # Raw files inside the data folder are recorded relative to it; the checks resolve the store there.
        data_dir = tmp_path / "data"
        shutil.copytree(mnist_slice_dir, data_dir / "incoming")
        result = _materialize(data_dir, data_dir / "incoming", verify_md5=False, val_size=200)
        raw = _manifest(data_dir, "mnist_raw", result)
        assert raw["directory"] == "incoming"
        assert raw["files"]["train_images"]["path"] == "incoming/train-images-idx3-ubyte.gz"
        assert not any(str(tmp_path) in json.dumps(_manifest(data_dir, a, result)) for a in ("mnist_raw", "mnist_tensors"))

        moved = tmp_path / "moved"
        data_dir.rename(moved)
        rerun = _materialize(moved, moved / "incoming", verify_md5=False, val_size=200)
        assert _check_outcomes(rerun)["tensors_splits"] is True
        assert rerun.asset_materializations_for_node("mnist_tensors")[0].metadata["store_write"].value == "reused"

    def test_a_source_folder_outside_the_data_folder_is_recorded_absolute(self, mnist_slice_dir: Path, tmp_path: Path) -> None:
        raw = _manifest(tmp_path, "mnist_raw", _materialize(tmp_path, mnist_slice_dir, verify_md5=False, val_size=200))
        assert raw["directory"] == str(mnist_slice_dir.resolve())
        assert raw["files"]["test_labels"]["path"] == str(mnist_slice_dir.resolve() / "t10k-labels-idx1-ubyte.gz")


class TestLabelHistogramSeverity:
    def test_a_slice_is_warned_about_and_not_blocked(self, mnist_slice_dir: Path, tmp_path: Path) -> None:
        result = _materialize(tmp_path, mnist_slice_dir, verify_md5=False, val_size=200, downstream=True)
        (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "tensors_label_histogram"]
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
        assert result.success and result.asset_materializations_for_node("after_tensors")


@pytest.mark.slow
class TestMaterializeFullMnist:
    def test_official_files_pass_every_check(self, mnist_dir: Path, tmp_path: Path) -> None:
        result = _materialize(tmp_path, mnist_dir, verify_md5=True, val_size=10_000)
        assert all(_check_outcomes(result).values()), _check_outcomes(result)
        raw_mat = result.asset_materializations_for_node("mnist_raw")[0]
        assert raw_mat.metadata["all_official"].value is True

    def test_a_relabeled_full_size_set_is_blocked(self, mnist_dir: Path, tmp_path: Path) -> None:
        folder = tmp_path / "relabeled"
        shutil.copytree(mnist_dir, folder)
        path = folder / "t10k-labels-idx1-ubyte.gz"
        payload = bytearray(gzip.decompress(path.read_bytes()))
        payload[-1] = (payload[-1] + 1) % 10  # one label changed, still a digit: only the histogram can tell
        path.write_bytes(gzip.compress(bytes(payload)))
        result = _materialize(tmp_path / "data", folder, verify_md5=False, val_size=10_000, raise_on_error=False, downstream=True)
        (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "tensors_label_histogram"]
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert "labels were changed" in evaluation.description
        assert not result.asset_materializations_for_node("after_tensors")  # blocked: training would not run
