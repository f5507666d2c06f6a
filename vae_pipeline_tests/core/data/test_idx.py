"""Raw IDX parsing and every bad input, on tiny sets, slices and the real files."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from vae_pipeline.core.data import idx
from vae_pipeline.core.data.idx import DataError
from vae_pipeline_tests.idx_files import idx_bytes, idx_header, measure_read, tiny_arrays, write_bomb_set, write_idx_set


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    return write_idx_set(tmp_path / "raw", tiny_arrays())


class TestParseIdx:
    def test_round_trip_images_and_labels(self) -> None:
        arrays = tiny_arrays()
        images = idx.parse_idx(idx_bytes(arrays["train_images"]), idx.IDX_IMAGES_MAGIC)
        labels = idx.parse_idx(idx_bytes(arrays["train_labels"]), idx.IDX_LABELS_MAGIC)
        np.testing.assert_array_equal(images, arrays["train_images"])
        np.testing.assert_array_equal(labels, arrays["train_labels"])

    def test_reads_plain_and_gzip_files_alike(self, tmp_path: Path) -> None:
        arrays = tiny_arrays()
        gz = idx.read_raw_dataset(write_idx_set(tmp_path / "gz", arrays), verify_md5=False)
        plain = idx.read_raw_dataset(write_idx_set(tmp_path / "plain", arrays, compress=False), verify_md5=False)
        np.testing.assert_array_equal(gz.train_images, plain.train_images)
        assert gz.counts() == {"train": 20, "test": 6}


class TestRealMnist:
    def test_official_files_verify_and_count(self, mnist_dir: Path) -> None:
        raw = idx.read_raw_dataset(mnist_dir, "mnist")
        assert raw.counts() == {"train": 60000, "test": 10000}
        assert all(f.verified for f in raw.files.values())
        assert raw.files["train_images"].md5 == idx.OFFICIAL_GZ_MD5["mnist"]["train_images"]
        assert np.bincount(raw.train_labels, minlength=10).tolist() == list(idx.OFFICIAL_LABEL_COUNTS["mnist"]["train"])

    def test_a_slice_is_not_official(self, mnist_slice_dir: Path) -> None:
        with pytest.raises(DataError, match="does not match the official mnist file"):
            idx.read_raw_dataset(mnist_slice_dir, "mnist")
        raw = idx.read_raw_dataset(mnist_slice_dir, "mnist", verify_md5=False)
        assert raw.counts() == {"train": 1200, "test": 300}
        assert not any(f.verified for f in raw.files.values())


class TestBadInput:
    """Each bad input fails with an error naming the file and the fix."""

    def test_folder_missing(self, tmp_path: Path) -> None:
        with pytest.raises(DataError, match=r"nowhere.*does not exist.*VAE_PIPELINE_MNIST_DIR"):
            idx.read_raw_dataset(tmp_path / "nowhere")

    def test_one_file_missing(self, tiny_dir: Path) -> None:
        (tiny_dir / "t10k-labels-idx1-ubyte.gz").unlink()
        with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz is missing.*all four"):
            idx.read_raw_dataset(tiny_dir, verify_md5=False)

    def test_wrong_magic_number(self, tiny_dir: Path) -> None:
        # labels where images belong
        shutil.copy(tiny_dir / "train-labels-idx1-ubyte.gz", tiny_dir / "train-images-idx3-ubyte.gz")
        with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz has magic number 0x00000801, expected 0x00000803"):
            idx.read_raw_dataset(tiny_dir, verify_md5=False)

    def test_truncated_payload(self, tiny_dir: Path) -> None:
        path = tiny_dir / "t10k-images-idx3-ubyte.gz"
        payload = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(payload[:-100]))
        with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz is truncated.*fetch it again"):
            idx.read_raw_dataset(tiny_dir, verify_md5=False)

    def test_truncated_gzip_stream(self, tiny_dir: Path) -> None:
        path = tiny_dir / "train-images-idx3-ubyte.gz"
        path.write_bytes(path.read_bytes()[:-50])
        with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz is a truncated or corrupt gzip"):
            idx.read_raw_dataset(tiny_dir, verify_md5=False)

    def test_wrong_dimensions(self, tmp_path: Path) -> None:
        folder = write_idx_set(tmp_path / "raw", tiny_arrays(hw=(32, 32)))
        with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz holds images of 32x32, expected 28x28"):
            idx.read_raw_dataset(folder, verify_md5=False)

    def test_image_and_label_counts_differ(self, tmp_path: Path) -> None:
        arrays = tiny_arrays()
        arrays["train_labels"] = arrays["train_labels"][:-3]
        folder = write_idx_set(tmp_path / "raw", arrays)
        with pytest.raises(DataError, match=r"has 20 images but .*train-labels-idx1-ubyte\.gz has 17 labels"):
            idx.read_raw_dataset(folder, verify_md5=False)

    def test_md5_mismatch_on_official_name(self, mnist_dir: Path, tmp_path: Path) -> None:
        folder = tmp_path / "raw"
        shutil.copytree(mnist_dir, folder)
        path = folder / "t10k-labels-idx1-ubyte.gz"
        payload = bytearray(gzip.decompress(path.read_bytes()))
        payload[-1] = (payload[-1] + 1) % 10  # one label changed: still a valid IDX file
        path.write_bytes(gzip.compress(bytes(payload)))
        with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz does not match the official mnist file.*fetch it again"):
            idx.read_raw_dataset(folder, "mnist")

    def test_not_gzip_behind_gz_name(self, tiny_dir: Path) -> None:
        (tiny_dir / "train-labels-idx1-ubyte.gz").write_bytes(b"<html>404 Not Found</html>")
        with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz is named \.gz but is not gzip data"):
            idx.read_raw_dataset(tiny_dir, verify_md5=False)

    @pytest.mark.parametrize("compress", [True, False])
    def test_trailing_bytes(self, tmp_path: Path, compress: bool) -> None:
        folder = write_idx_set(tmp_path / "raw", tiny_arrays(), compress=compress)
        path = next(folder.glob("t10k-labels-idx1-ubyte*"))
        payload = gzip.decompress(path.read_bytes()) if compress else path.read_bytes()
        padded = payload + bytes(7)
        path.write_bytes(gzip.compress(padded) if compress else padded)
        with pytest.raises(DataError, match=rf"{path.name} holds more than its header promises: at least 7 bytes.*fetch the"):
            idx.read_raw_dataset(folder, verify_md5=False)


# A gzip bomb like the (17 MB expanding to 3.9 GB): 4 GiB of zeros behind a header promising 60000x28x28.
BOMB_EXPANDED_BYTES = 4 << 30
MEMORY_BOUND_MIB = 300  # above the interpreter's own, while a hostile file is refused


class TestHostileFiles:
    """Files built to exhaust memory are refused after reading no more than they promise."""

    @pytest.mark.parametrize("verify_md5", [True, False])
    def test_gzip_bomb_is_refused_within_bounded_memory(self, tmp_path: Path, verify_md5: bool) -> None:
        folder = write_bomb_set(tmp_path / "raw", BOMB_EXPANDED_BYTES)
        assert (folder / "train-images-idx3-ubyte.gz").stat().st_size < 8 << 20  # the expansion is 500x the file
        measured = measure_read(folder, verify_md5=verify_md5)
        refusal = measured["refusal"]
        assert refusal is not None and "train-images-idx3-ubyte.gz holds more than its header promises" in refusal
        assert "fetch the official file again" in refusal
        assert measured["peak_delta_mib"] < MEMORY_BOUND_MIB, measured

    def test_overflowing_dimensions_are_refused_by_the_header_check(self, tmp_path: Path) -> None:
        folder = write_idx_set(tmp_path / "raw", tiny_arrays())
        path = folder / "train-images-idx3-ubyte.gz"
        path.write_bytes(gzip.compress(idx_header(idx.IDX_IMAGES_MAGIC, (2**31, 2**31, 2**31)) + bytes(1000)))
        measured = measure_read(folder, verify_md5=False)
        assert measured["refusal"] == (
            f"{path} holds images of 2147483648x2147483648, expected 28x28; this pipeline reads MNIST-format data "
            "only (or the header is corrupt: fetch the file again)."
        )
        assert measured["peak_delta_mib"] < MEMORY_BOUND_MIB, measured

    @pytest.mark.parametrize(
        ("key", "dims", "message"),
        [
            ("train_images", (2**32 - 1, 28, 28), r"promises 4,294,967,295 images; this pipeline reads 1 to 1,000,000 per file"),
            ("train_images", (0, 28, 28), r"promises 0 images; this pipeline reads 1 to 1,000,000 per file"),
            ("test_labels", (2**32 - 1,), r"promises 4,294,967,295 labels; this pipeline reads 1 to 1,000,000 per file"),
            ("test_images", (2**32 - 1, 2**32 - 1, 2**32 - 1), r"holds images of 4294967295x4294967295, expected 28x28"),
        ],
    )
    def test_header_bounds(self, tmp_path: Path, key: str, dims: tuple[int, ...], message: str) -> None:
        folder = write_idx_set(tmp_path / "raw", tiny_arrays())
        magic = idx.IDX_IMAGES_MAGIC if key.endswith("images") else idx.IDX_LABELS_MAGIC
        path = folder / f"{idx.RAW_FILES[key]}.gz"
        path.write_bytes(gzip.compress(idx_header(magic, dims) + bytes(100)))
        with pytest.raises(DataError, match=rf"{path.name} {message}.*fetch"):
            idx.read_raw_dataset(folder, verify_md5=False)

    def test_the_set_as_a_whole_is_capped(self, tmp_path: Path) -> None:
        # Each file within the per-file bound, together over the cap: refused from the headers alone.
        folder = tmp_path / "raw"
        folder.mkdir()
        for key, stem in idx.RAW_FILES.items():
            magic, dims = (idx.IDX_IMAGES_MAGIC, (10**6, 28, 28)) if key.endswith("images") else (idx.IDX_LABELS_MAGIC, (10**6,))
            (folder / f"{stem}.gz").write_bytes(gzip.compress(idx_header(magic, dims)))
        with pytest.raises(DataError, match=r"promise 1,570,000,000 bytes together .* more than the cap of 1,073,741,824"):
            idx.read_raw_dataset(folder, verify_md5=False)


class TestLabels:
    @pytest.mark.parametrize("verify_md5", [True, False])
    def test_labels_outside_the_classes_are_refused(self, tmp_path: Path, verify_md5: bool) -> None:
        arrays = tiny_arrays()
        arrays["train_labels"][[0, 5]] = 255  # would be stored as -1 after an int8 wrap-around
        arrays["train_labels"][7] = 12
        folder = write_idx_set(tmp_path / "raw", arrays)
        with pytest.raises(
            DataError,
            match=r"train-labels-idx1-ubyte\.gz holds labels outside mnist's classes 0\.\.9: 12 \(1 label\), 255 \(2 labels\)\. "
            r".*fetch the official file again",
        ):
            idx.read_raw_dataset(folder, "mnist", verify_md5=verify_md5)

    def test_every_class_is_accepted(self, tiny_dir: Path) -> None:
        raw = idx.read_raw_dataset(tiny_dir, verify_md5=False)
        assert sorted(set(raw.train_labels.tolist())) == list(range(10))


FASHION_DIR = Path(os.environ.get("VAE_PIPELINE_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))


@pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist; .ci/run installs it)",
)
class TestFashionMnist:
    """The second dataset goes through the same code path, chosen by name."""

    def test_official_files_verify_and_count(self) -> None:
        raw = idx.read_raw_dataset(FASHION_DIR, "fashion_mnist")
        assert raw.counts() == {"train": 60000, "test": 10000}
        assert all(f.verified for f in raw.files.values())
        assert np.bincount(raw.test_labels, minlength=10).tolist() == [1000] * 10

    def test_fashion_files_are_not_mnist(self) -> None:
        with pytest.raises(DataError, match="does not match the official mnist file"):
            idx.read_raw_dataset(FASHION_DIR, "mnist")
