"""The seeded split, the tensor store and the sanity checks on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vae_pipeline.core.data import checks as data_checks, tensor_store
from vae_pipeline.core.data.idx import DataError, read_raw_dataset
from vae_pipeline_tests.idx_files import tiny_arrays, write_idx_set


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    return write_idx_set(tmp_path / "raw", tiny_arrays())


class TestSplit:
    def test_disjoint_complete_and_seeded(self) -> None:
        train, val = tensor_store.split_indices(100, 20, seed=3)
        assert len(val) == 20 and len(train) == 80
        assert not set(train) & set(val)
        assert sorted(set(train) | set(val)) == list(range(100))
        _, again_val = tensor_store.split_indices(100, 20, seed=3)
        np.testing.assert_array_equal(val, again_val)
        other_val = tensor_store.split_indices(100, 20, seed=4)[1]
        assert not np.array_equal(val, other_val)

    @pytest.mark.parametrize("val_size", [0, 100, 101])
    def test_val_size_out_of_range(self, val_size: int) -> None:
        with pytest.raises(DataError, match="val_size"):
            tensor_store.split_indices(100, val_size, seed=0)


class TestTensorStore:
    def _store(self, tiny_dir: Path, path: Path) -> str:
        raw = read_raw_dataset(tiny_dir, verify_md5=False)
        arrays = tensor_store.build_store_arrays(raw, 5, 0)
        return tensor_store.write_tensor_store(path, arrays, tensor_store.store_metadata(raw, 5, 0))

    def test_round_trip_and_normalization(self, tiny_dir: Path, tmp_path: Path) -> None:
        path = tmp_path / "store.safetensors"
        digest = self._store(tiny_dir, path)
        store = tensor_store.load_tensor_store(path)
        assert store.content_sha256 == digest
        assert {n: len(s) for n, s in store.splits.items()} == {"train": 15, "val": 5, "test": 6}
        x = store["test"].float_images()
        assert x.shape == (6, 1, 28, 28) and x.dtype == torch.float32
        raw = read_raw_dataset(tiny_dir, verify_md5=False)
        np.testing.assert_allclose(x[:, 0].numpy(), raw.test_images / 255.0, rtol=0, atol=1e-7)
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        # each image remembers where it came from
        np.testing.assert_array_equal(store["val"].images.numpy(), raw.train_images[store["val"].index.numpy()])

    def test_content_hash_is_deterministic_and_content_sensitive(self, tiny_dir: Path, tmp_path: Path) -> None:
        assert self._store(tiny_dir, tmp_path / "a.safetensors") == self._store(tiny_dir, tmp_path / "b.safetensors")
        raw = read_raw_dataset(tiny_dir, verify_md5=False)
        other = tensor_store.build_store_arrays(raw, 5, 1)  # another split seed
        assert tensor_store.content_hash(other) != tensor_store.load_tensor_store(tmp_path / "a.safetensors").content_sha256

    def test_failed_write_leaves_existing_store_intact(
        self, tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "store.safetensors"
        self._store(tiny_dir, path)
        before = path.read_bytes()

        def disk_full(tensors: dict, filename: str, metadata: dict) -> None:
            Path(filename).write_bytes(b"half a file")
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(tensor_store, "save_file", disk_full)
        with pytest.raises(OSError, match="No space left"):
            self._store(tiny_dir, path)
        assert path.read_bytes() == before
        assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".store*"))  # no temporary left behind

    def test_corrupted_store_is_detected(self, tiny_dir: Path, tmp_path: Path) -> None:
        path = tmp_path / "store.safetensors"
        self._store(tiny_dir, path)
        blob = bytearray(path.read_bytes())
        blob[-1] ^= 0xFF
        path.write_bytes(bytes(blob))
        with pytest.raises(DataError, match="content hash"):
            tensor_store.load_tensor_store(path)


class TestContentAddressedStore:
    """`put_tensor_store` files a store under its content hash and writes identical content once."""

    def _put(self, tiny_dir: Path, folder: Path, split_seed: int = 0) -> tensor_store.StoredTensors:
        raw = read_raw_dataset(tiny_dir, verify_md5=False)
        arrays = tensor_store.build_store_arrays(raw, 5, split_seed)
        return tensor_store.put_tensor_store(folder, arrays, tensor_store.store_metadata(raw, 5, split_seed))

    def test_path_is_named_by_content(self, tiny_dir: Path, tmp_path: Path) -> None:
        stored = self._put(tiny_dir, tmp_path / "tensors")
        assert stored.action == "written" and stored.damage is None
        assert stored.path == tmp_path / "tensors" / "mnist" / f"{stored.content_sha256}.safetensors"
        assert tensor_store.load_tensor_store(stored.path).content_sha256 == stored.content_sha256

    def test_identical_content_is_written_once(self, tiny_dir: Path, tmp_path: Path) -> None:
        first = self._put(tiny_dir, tmp_path / "tensors")
        before = first.path.stat()
        again = self._put(tiny_dir, tmp_path / "tensors")
        after = again.path.stat()
        assert again.action == "reused" and again.path == first.path
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    def test_another_split_lands_beside_the_first(self, tiny_dir: Path, tmp_path: Path) -> None:
        first = self._put(tiny_dir, tmp_path / "tensors", split_seed=0)
        second = self._put(tiny_dir, tmp_path / "tensors", split_seed=1)
        assert second.path != first.path and second.path.parent == first.path.parent
        assert tensor_store.load_tensor_store(first.path).metadata["split_seed"] == "0"
        assert tensor_store.load_tensor_store(second.path).metadata["split_seed"] == "1"

    @pytest.mark.parametrize("damage", ["flipped", "truncated"])
    def test_a_damaged_copy_is_named_and_replaced(self, tiny_dir: Path, tmp_path: Path, damage: str) -> None:
        first = self._put(tiny_dir, tmp_path / "tensors")
        blob = bytearray(first.path.read_bytes())
        if damage == "flipped":
            blob[-1] ^= 0xFF
        else:
            del blob[len(blob) // 2 :]
        first.path.write_bytes(bytes(blob))
        inode = first.path.stat().st_ino
        again = self._put(tiny_dir, tmp_path / "tensors")
        assert again.action == "rewritten" and again.path == first.path
        assert again.damage is not None and str(first.path) in again.damage
        assert first.path.stat().st_ino != inode  # replaced by rename, not written in place
        assert tensor_store.load_tensor_store(first.path).content_sha256 == first.content_sha256
        assert not list(first.path.parent.glob("*.tmp"))

    def test_a_copy_under_the_wrong_name_is_replaced(self, tiny_dir: Path, tmp_path: Path) -> None:
        first = self._put(tiny_dir, tmp_path / "tensors", split_seed=0)
        second = self._put(tiny_dir, tmp_path / "tensors", split_seed=1)
        first.path.write_bytes(second.path.read_bytes())  # intact, but not the content its name says
        again = self._put(tiny_dir, tmp_path / "tensors", split_seed=0)
        assert again.action == "rewritten" and f"holds content {second.content_sha256}" in str(again.damage)
        assert tensor_store.load_tensor_store(first.path).content_sha256 == first.content_sha256


class TestChecks:
    def test_full_mnist_passes_every_check(self, mnist_dir: Path, tmp_path: Path) -> None:
        raw = read_raw_dataset(mnist_dir)
        path = tmp_path / "mnist.safetensors"
        arrays = tensor_store.build_store_arrays(raw, 10000, 0)
        tensor_store.write_tensor_store(path, arrays, tensor_store.store_metadata(raw, 10000, 0))
        store = tensor_store.load_tensor_store(path)
        for result in (
            data_checks.check_shapes(store),
            data_checks.check_value_range(store),
            data_checks.check_label_histogram(store),
            data_checks.check_splits(store, 10000),
        ):
            assert result.passed, result.description
        assert data_checks.is_full_size(store)

    def test_label_histogram_knows_a_full_size_set_from_a_slice(self, mnist_dir: Path) -> None:
        raw = read_raw_dataset(mnist_dir)
        arrays = tensor_store.build_store_arrays(raw, 10000, 0)
        arrays["test/labels"][0] = (arrays["test/labels"][0] + 1) % 10  # one label changed, all still in 0..9
        relabeled = _in_memory(arrays)
        check = data_checks.check_label_histogram(relabeled)
        assert not check.passed and check.details["full_size"] is True
        assert "labels were changed" in check.description

        sliced = {key: value[:500] for key, value in arrays.items()}
        check = data_checks.check_label_histogram(_in_memory(sliced))
        assert not check.passed and check.details["full_size"] is False
        assert not data_checks.is_full_size(_in_memory(sliced))

    def test_checks_catch_bad_stores(self) -> None:
        images = torch.zeros(4, 28, 28, dtype=torch.uint8)
        images[0, 0, 0] = 255
        split = tensor_store.Split(images=images, labels=torch.tensor([0, 1, 2, 3]), index=torch.arange(4))
        leaky = tensor_store.TensorStore({"train": split, "val": split, "test": split}, {"dataset": "mnist"})
        assert not data_checks.check_splits(leaky, 4).passed  # same indices in train and val
        assert not data_checks.check_label_histogram(leaky).passed
        dark = tensor_store.Split(images=torch.zeros(4, 28, 28, dtype=torch.uint8), labels=split.labels, index=split.index)
        assert not data_checks.check_value_range(tensor_store.TensorStore({"train": dark, "val": split, "test": split})).passed
        wide = tensor_store.Split(images=torch.zeros(4, 28, 30, dtype=torch.uint8), labels=split.labels, index=split.index)
        assert not data_checks.check_shapes(tensor_store.TensorStore({"train": wide, "val": split, "test": split})).passed


def _in_memory(arrays: dict[str, np.ndarray], dataset: str = "mnist") -> tensor_store.TensorStore:
    """A store straight from its arrays, for checks that need no file."""
    splits = {
        name: tensor_store.Split(
            images=torch.from_numpy(arrays[f"{name}/images"]),
            labels=torch.from_numpy(arrays[f"{name}/labels"]),
            index=torch.from_numpy(arrays[f"{name}/index"]),
        )
        for name in tensor_store.SPLITS
    }
    return tensor_store.TensorStore(splits, {"dataset": dataset})
