"""Raw IDX parsing, every bad input, the split and the tensor store."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vae_pipeline.core import data
from vae_pipeline.core.data import DataError
from vae_pipeline_tests.idx_files import idx_bytes, write_idx_set


def _tiny_arrays(n_train: int = 20, n_test: int = 6, hw: tuple[int, int] = (28, 28)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_train + n_test, *hw), dtype=np.uint8)
    images[:, 0, 0] = 0  # every split spans the full range
    images[:, 0, 1] = 255
    labels = (np.arange(n_train + n_test) % 10).astype(np.uint8)
    return {
        "train_images": images[:n_train],
        "train_labels": labels[:n_train],
        "test_images": images[n_train:],
        "test_labels": labels[n_train:],
    }


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    return write_idx_set(tmp_path / "raw", _tiny_arrays())


class TestParseIdx:
    def test_round_trip_images_and_labels(self) -> None:
        arrays = _tiny_arrays()
        images = data.parse_idx(idx_bytes(arrays["train_images"]), data.IDX_IMAGES_MAGIC)
        labels = data.parse_idx(idx_bytes(arrays["train_labels"]), data.IDX_LABELS_MAGIC)
        np.testing.assert_array_equal(images, arrays["train_images"])
        np.testing.assert_array_equal(labels, arrays["train_labels"])

    def test_reads_plain_and_gzip_files_alike(self, tmp_path: Path) -> None:
        arrays = _tiny_arrays()
        gz = data.read_raw_dataset(write_idx_set(tmp_path / "gz", arrays), verify_md5=False)
        plain = data.read_raw_dataset(write_idx_set(tmp_path / "plain", arrays, compress=False), verify_md5=False)
        np.testing.assert_array_equal(gz.train_images, plain.train_images)
        assert gz.counts() == {"train": 20, "test": 6}


class TestRealMnist:
    def test_official_files_verify_and_count(self, mnist_dir: Path) -> None:
        raw = data.read_raw_dataset(mnist_dir, "mnist")
        assert raw.counts() == {"train": 60000, "test": 10000}
        assert all(f.verified for f in raw.files.values())
        assert raw.files["train_images"].md5 == data.OFFICIAL_GZ_MD5["mnist"]["train_images"]
        assert np.bincount(raw.train_labels, minlength=10).tolist() == list(data.OFFICIAL_LABEL_COUNTS["mnist"]["train"])

    def test_a_slice_is_not_official(self, mnist_slice_dir: Path) -> None:
        with pytest.raises(DataError, match="does not match the official mnist file"):
            data.read_raw_dataset(mnist_slice_dir, "mnist")
        raw = data.read_raw_dataset(mnist_slice_dir, "mnist", verify_md5=False)
        assert raw.counts() == {"train": 1200, "test": 300}
        assert not any(f.verified for f in raw.files.values())


class TestBadInput:
    """Each bad input fails with an error naming the file and the fix."""

    def test_folder_missing(self, tmp_path: Path) -> None:
        with pytest.raises(DataError, match=r"nowhere.*does not exist.*VAE_PIPELINE_MNIST_DIR"):
            data.read_raw_dataset(tmp_path / "nowhere")

    def test_one_file_missing(self, tiny_dir: Path) -> None:
        (tiny_dir / "t10k-labels-idx1-ubyte.gz").unlink()
        with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz is missing.*all four"):
            data.read_raw_dataset(tiny_dir, verify_md5=False)

    def test_wrong_magic_number(self, tiny_dir: Path) -> None:
        # labels where images belong
        shutil.copy(tiny_dir / "train-labels-idx1-ubyte.gz", tiny_dir / "train-images-idx3-ubyte.gz")
        with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz has magic number 0x00000801, expected 0x00000803"):
            data.read_raw_dataset(tiny_dir, verify_md5=False)

    def test_truncated_payload(self, tiny_dir: Path) -> None:
        path = tiny_dir / "t10k-images-idx3-ubyte.gz"
        payload = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(payload[:-100]))
        with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz is truncated.*fetch it again"):
            data.read_raw_dataset(tiny_dir, verify_md5=False)

    def test_truncated_gzip_stream(self, tiny_dir: Path) -> None:
        path = tiny_dir / "train-images-idx3-ubyte.gz"
        path.write_bytes(path.read_bytes()[:-50])
        with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz is a truncated or corrupt gzip"):
            data.read_raw_dataset(tiny_dir, verify_md5=False)

    def test_wrong_dimensions(self, tmp_path: Path) -> None:
        folder = write_idx_set(tmp_path / "raw", _tiny_arrays(hw=(32, 32)))
        with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz holds images of 32x32, expected 28x28"):
            data.read_raw_dataset(folder, verify_md5=False)

    def test_image_and_label_counts_differ(self, tmp_path: Path) -> None:
        arrays = _tiny_arrays()
        arrays["train_labels"] = arrays["train_labels"][:-3]
        folder = write_idx_set(tmp_path / "raw", arrays)
        with pytest.raises(DataError, match=r"has 20 images but .*train-labels-idx1-ubyte\.gz has 17 labels"):
            data.read_raw_dataset(folder, verify_md5=False)

    def test_md5_mismatch_on_official_name(self, mnist_dir: Path, tmp_path: Path) -> None:
        folder = tmp_path / "raw"
        shutil.copytree(mnist_dir, folder)
        path = folder / "t10k-labels-idx1-ubyte.gz"
        payload = bytearray(gzip.decompress(path.read_bytes()))
        payload[-1] = (payload[-1] + 1) % 10  # one label changed: still a valid IDX file
        path.write_bytes(gzip.compress(bytes(payload)))
        with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz does not match the official mnist file.*fetch it again"):
            data.read_raw_dataset(folder, "mnist")

    def test_not_gzip_behind_gz_name(self, tiny_dir: Path) -> None:
        (tiny_dir / "train-labels-idx1-ubyte.gz").write_bytes(b"<html>404 Not Found</html>")
        with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz is named \.gz but is not gzip data"):
            data.read_raw_dataset(tiny_dir, verify_md5=False)


class TestSplit:
    def test_disjoint_complete_and_seeded(self) -> None:
        train, val = data.split_indices(100, 20, seed=3)
        assert len(val) == 20 and len(train) == 80
        assert not set(train) & set(val)
        assert sorted(set(train) | set(val)) == list(range(100))
        again_train, again_val = data.split_indices(100, 20, seed=3)
        np.testing.assert_array_equal(val, again_val)
        other_val = data.split_indices(100, 20, seed=4)[1]
        assert not np.array_equal(val, other_val)

    @pytest.mark.parametrize("val_size", [0, 100, 101])
    def test_val_size_out_of_range(self, val_size: int) -> None:
        with pytest.raises(DataError, match="val_size"):
            data.split_indices(100, val_size, seed=0)


class TestTensorStore:
    def _store(self, tiny_dir: Path, path: Path) -> str:
        raw = data.read_raw_dataset(tiny_dir, verify_md5=False)
        return data.write_tensor_store(path, data.build_store_arrays(raw, 5, 0), data.store_metadata(raw, 5, 0))

    def test_round_trip_and_normalization(self, tiny_dir: Path, tmp_path: Path) -> None:
        path = tmp_path / "store.safetensors"
        digest = self._store(tiny_dir, path)
        store = data.load_tensor_store(path)
        assert store.content_sha256 == digest
        assert {n: len(s) for n, s in store.splits.items()} == {"train": 15, "val": 5, "test": 6}
        x = store["test"].float_images()
        assert x.shape == (6, 1, 28, 28) and x.dtype == torch.float32
        raw = data.read_raw_dataset(tiny_dir, verify_md5=False)
        np.testing.assert_allclose(x[:, 0].numpy(), raw.test_images / 255.0, rtol=0, atol=1e-7)
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        # each image remembers where it came from
        np.testing.assert_array_equal(store["val"].images.numpy(), raw.train_images[store["val"].index.numpy()])

    def test_content_hash_is_deterministic_and_content_sensitive(self, tiny_dir: Path, tmp_path: Path) -> None:
        assert self._store(tiny_dir, tmp_path / "a.safetensors") == self._store(tiny_dir, tmp_path / "b.safetensors")
        raw = data.read_raw_dataset(tiny_dir, verify_md5=False)
        other = data.build_store_arrays(raw, 5, 1)  # another split seed
        assert data.content_hash(other) != data.load_tensor_store(tmp_path / "a.safetensors").content_sha256

    def test_failed_write_leaves_existing_store_intact(
        self, tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "store.safetensors"
        self._store(tiny_dir, path)
        before = path.read_bytes()

        def disk_full(tensors: dict, filename: str, metadata: dict) -> None:
            Path(filename).write_bytes(b"half a file")
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(data, "save_file", disk_full)
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
            data.load_tensor_store(path)


class TestChecks:
    def test_full_mnist_passes_every_check(self, mnist_dir: Path, tmp_path: Path) -> None:
        raw = data.read_raw_dataset(mnist_dir)
        path = tmp_path / "mnist.safetensors"
        data.write_tensor_store(path, data.build_store_arrays(raw, 10000, 0), data.store_metadata(raw, 10000, 0))
        store = data.load_tensor_store(path)
        for result in (
            data.check_shapes(store),
            data.check_value_range(store),
            data.check_label_histogram(store),
            data.check_splits(store, 10000),
        ):
            assert result.passed, result.description

    def test_checks_catch_bad_stores(self) -> None:
        images = torch.zeros(4, 28, 28, dtype=torch.uint8)
        images[0, 0, 0] = 255
        split = data.Split(images=images, labels=torch.tensor([0, 1, 2, 3]), index=torch.arange(4))
        leaky = data.TensorStore({"train": split, "val": split, "test": split}, {"dataset": "mnist"})
        assert not data.check_splits(leaky, 4).passed  # same indices in train and val
        assert not data.check_label_histogram(leaky).passed
        dark = data.Split(images=torch.zeros(4, 28, 28, dtype=torch.uint8), labels=split.labels, index=split.index)
        assert not data.check_value_range(data.TensorStore({"train": dark, "val": split, "test": split})).passed
        wide = data.Split(images=torch.zeros(4, 28, 30, dtype=torch.uint8), labels=split.labels, index=split.index)
        assert not data.check_shapes(data.TensorStore({"train": wide, "val": split, "test": split})).passed


FASHION_DIR = Path(os.environ.get("VAE_PIPELINE_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))


@pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist; .ci/run installs it)",
)
class TestFashionMnist:
    """The second dataset goes through the same code path, chosen by name."""

    def test_official_files_verify_and_count(self) -> None:
        raw = data.read_raw_dataset(FASHION_DIR, "fashion_mnist")
        assert raw.counts() == {"train": 60000, "test": 10000}
        assert all(f.verified for f in raw.files.values())
        assert np.bincount(raw.test_labels, minlength=10).tolist() == [1000] * 10

    def test_fashion_files_are_not_mnist(self) -> None:
        with pytest.raises(DataError, match="does not match the official mnist file"):
            data.read_raw_dataset(FASHION_DIR, "mnist")
