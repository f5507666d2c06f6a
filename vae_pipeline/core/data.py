"""Raw IDX parsing, verification, the seeded split and the normalized tensor store.

The tensor store is one safetensors file: uint8 images plus a scale of 1/255 (lossless, a
quarter of float32's size, memory-mappable, no pickle), int64 labels and the index of each
image in its official file, for train, val and test. Its sha256 is the data version.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from vae_pipeline.core.atomic import atomic_path

STORE_FORMAT_VERSION = "1"
PIXEL_SCALE = 1.0 / 255.0  # stored uint8 * PIXEL_SCALE gives the [0, 1] image
SPLITS = ("train", "val", "test")

# Official file names, in the order the four-file set is documented.
RAW_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# md5 of the official files' decompressed IDX bytes. Checking the content rather than the .gz
# accepts an official file that was recompressed (Debian's dataset-fashion-mnist is) or gunzipped,
# and still rejects any changed byte. The published .gz sums are recorded for reference.
OFFICIAL_CONTENT_MD5 = {
    "mnist": {
        "train_images": "6bbc9ace898e44ae57da46a324031adb",
        "train_labels": "a25bea736e30d166cdddb491f175f624",
        "test_images": "2646ac647ad5339dbf082846283269ea",
        "test_labels": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion_mnist": {
        "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
        "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
        "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
OFFICIAL_GZ_MD5 = {
    "mnist": {
        "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
        "test_images": "9fb629c4189551a2d022fa330f9573f3",
        "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
        "test_images": "bef4ecab320f06d8554ea6380940ec79",
        "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

# Published label histograms (digits / classes 0..9) of the official sets.
OFFICIAL_LABEL_COUNTS = {
    "mnist": {
        "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
        "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
    },
    "fashion_mnist": {"train": (6000,) * 10, "test": (1000,) * 10},
}

# torchvision's folder names, so a torchvision download and our local lookup agree.
TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}

IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
IMAGE_HW = (28, 28)


class DataError(ValueError):
    """Raw data or a tensor store is unusable; the message names the file and the fix."""


@dataclass(frozen=True)
class RawFile:
    """One located raw IDX file and its checksums."""

    path: Path
    md5: str  # of the file as it is on disk (.gz or plain)
    content_md5: str  # of the decompressed IDX bytes
    verified: bool  # content_md5 equals the official one


@dataclass(frozen=True)
class RawDataset:
    """The four parsed IDX arrays and where they came from."""

    dataset: str
    source: str  # "configured", "local" or "download"
    directory: Path
    files: Mapping[str, RawFile]
    train_images: np.ndarray  # (60000, 28, 28) uint8 for official sets
    train_labels: np.ndarray  # (60000,) uint8
    test_images: np.ndarray  # (10000, 28, 28) uint8
    test_labels: np.ndarray  # (10000,) uint8

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train_labels), "test": len(self.test_labels)}

    @property
    def content_version(self) -> str:
        """sha256 over the four files' decompressed md5s: changes exactly when the data does."""
        return hashlib.sha256("".join(self.files[k].content_md5 for k in sorted(self.files)).encode()).hexdigest()


@dataclass(frozen=True)
class Split:
    """One split of the tensor store, on the CPU."""

    images: torch.Tensor  # (n, 28, 28) uint8
    labels: torch.Tensor  # (n,) int64
    index: torch.Tensor  # (n,) int64, position in the official train or t10k file

    def __len__(self) -> int:
        return len(self.labels)

    def float_images(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The images scaled to [0, 1] as float32, shaped (n, 1, 28, 28)."""
        x = self.images.to(device, non_blocking=True)  # (n, 28, 28) uint8
        return x.unsqueeze(1).to(torch.float32).mul_(PIXEL_SCALE)  # (n, 1, 28, 28)


@dataclass(frozen=True)
class TensorStore:
    """The normalized dataset: train, val and test splits plus self-describing metadata."""

    splits: Mapping[str, Split]
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Split:
        return self.splits[name]

    @property
    def dataset(self) -> str:
        return self.metadata.get("dataset", "mnist")

    @property
    def content_sha256(self) -> str:
        return self.metadata["content_sha256"]


# --- reading raw IDX files ------------------------------------------------------------------


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _read_bytes(path: Path) -> bytes:
    """The decompressed bytes of an IDX file, .gz or plain."""
    if not path.is_file():
        raise DataError(f"{path} does not exist; put the official file there or point the source folder elsewhere.")
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    if raw[:2] != b"\x1f\x8b":
        raise DataError(
            f"{path} is named .gz but is not gzip data (first bytes {raw[:4].hex()}); "
            "it is probably an HTML error page or a partial download: delete it and fetch it again."
        )
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path} is a truncated or corrupt gzip file ({exc}); delete it and fetch it again.") from exc


def parse_idx(data: bytes, expected_magic: int, source: Path | str = "<bytes>") -> np.ndarray:
    """Parse one unsigned-byte IDX payload into an array, checking magic number and length."""
    if len(data) < 4:
        raise DataError(f"{source} is truncated: {len(data)} bytes, too short for an IDX header; fetch it again.")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        kind = "images" if expected_magic == IDX_IMAGES_MAGIC else "labels"
        raise DataError(
            f"{source} has magic number 0x{magic:08x}, expected 0x{expected_magic:08x} for IDX {kind}; "
            "it is not an MNIST-format file (or images and labels were swapped)."
        )
    ndim = data[3]
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{source} is truncated inside its header; fetch it again.")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    payload = len(data) - header_len
    if payload < expected:
        raise DataError(
            f"{source} is truncated: the header promises {dims} = {expected} bytes but only {payload} follow; "
            "fetch it again."
        )
    if payload > expected:
        raise DataError(f"{source} has {payload - expected} bytes after its {dims} payload; it is not a valid IDX file.")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def _find_file(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{directory / (stem + '.gz')} is missing (neither {stem}.gz nor {stem} is in {directory}); "
        "the folder needs all four official IDX files."
    )


def read_raw_dataset(
    directory: Path | str,
    dataset: str = "mnist",
    *,
    verify_md5: bool = True,
    source: str = "configured",
) -> RawDataset:
    """Read and check the four IDX files in `directory`.

    With `verify_md5`, each file must match the official md5 of `dataset`; turn it off only
    for a deliberately different IDX set (a slice, say).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(
            f"the raw data folder {directory} does not exist; create it with the four IDX files "
            "or point VAE_PIPELINE_MNIST_DIR (or the asset's source_dir config) at the right folder."
        )
    paths = {key: _find_file(directory, stem) for key, stem in RAW_FILES.items()}
    official = OFFICIAL_CONTENT_MD5.get(dataset, {})
    arrays: dict[str, np.ndarray] = {}
    files: dict[str, RawFile] = {}
    for key, path in paths.items():
        data = _read_bytes(path)
        arrays[key] = parse_idx(data, IDX_IMAGES_MAGIC if key.endswith("images") else IDX_LABELS_MAGIC, path)
        content_md5 = hashlib.md5(data).hexdigest()
        files[key] = RawFile(path=path, md5=md5_of(path), content_md5=content_md5, verified=content_md5 == official.get(key))
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape[1:] != IMAGE_HW:
            raise DataError(
                f"{paths[f'{split}_images']} holds images of {images.shape[1]}x{images.shape[2]}, "
                f"expected {IMAGE_HW[0]}x{IMAGE_HW[1]}; this pipeline reads MNIST-format data only."
            )
        if len(images) != len(labels):
            raise DataError(
                f"{paths[f'{split}_images']} has {len(images)} images but {paths[f'{split}_labels']} has "
                f"{len(labels)} labels; the two files come from different sets, fetch matching ones."
            )
    if verify_md5:
        for key, raw_file in files.items():
            if not raw_file.verified:
                raise DataError(
                    f"{raw_file.path} does not match the official {dataset} file: its decompressed md5 is "
                    f"{raw_file.content_md5}, the official one {official.get(key)}. The file is corrupt or not the "
                    "official one: fetch it again, or set verify_md5=false if you mean to use other data."
                )
    return RawDataset(
        dataset=dataset,
        source=source,
        directory=directory,
        files=files,
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"],
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"],
    )


def local_raw_dir(data_dir: Path | str, dataset: str) -> Path:
    """Where raw files live under the data folder (torchvision's layout, so its download lands there)."""
    return Path(data_dir) / "raw" / TORCHVISION_FOLDER[dataset] / "raw"


def download_raw(data_dir: Path | str, dataset: str) -> Path:
    """Download the official files with torchvision into the data folder; returns their folder."""
    from torchvision import datasets  # imported here: only this path needs it

    root = Path(data_dir) / "raw"
    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[dataset]
    try:
        for train in (True, False):
            cls(root=str(root), train=train, download=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; torchvision raises RuntimeError on md5
        raise DataError(
            f"could not download {dataset} into {root} ({exc}); without network access, point "
            "VAE_PIPELINE_MNIST_DIR at a folder with the four official IDX .gz files."
        ) from exc
    return local_raw_dir(data_dir, dataset)


def locate_raw_dir(
    dataset: str, configured_dir: Path | str | None, data_dir: Path | str, allow_download: bool
) -> tuple[Path, str]:
    """The folder to read, by precedence: configured folder, files under data/, a download.

    A configured folder is used as given: if it is wrong, that is an error, not a fallback.
    """
    if configured_dir:
        return Path(configured_dir), "configured"
    local = local_raw_dir(data_dir, dataset)
    if all(((local / f"{stem}.gz").is_file() or (local / stem).is_file()) for stem in RAW_FILES.values()):
        return local, "local"
    if allow_download:
        return download_raw(data_dir, dataset), "download"
    raise DataError(
        f"no {dataset} files found: set VAE_PIPELINE_MNIST_DIR (or source_dir) to a folder with the four "
        f"official IDX files, put them in {local}, or allow the download."
    )


# --- split and tensor store -----------------------------------------------------------------


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint, sorted (train, val) indices into range(n) from a seeded permutation."""
    if not 0 < val_size < n:
        raise DataError(f"val_size={val_size} must be between 1 and {n - 1} for a training set of {n} images.")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def build_store_arrays(raw: RawDataset, val_size: int, split_seed: int) -> dict[str, np.ndarray]:
    """The arrays of the tensor store, keyed "<split>/<images|labels|index>"."""
    train_idx, val_idx = split_indices(len(raw.train_labels), val_size, split_seed)
    test_idx = np.arange(len(raw.test_labels))
    out: dict[str, np.ndarray] = {}
    for name, images, labels, idx in (
        ("train", raw.train_images, raw.train_labels, train_idx),
        ("val", raw.train_images, raw.train_labels, val_idx),
        ("test", raw.test_images, raw.test_labels, test_idx),
    ):
        out[f"{name}/images"] = np.ascontiguousarray(images[idx])  # (n, 28, 28) uint8
        out[f"{name}/labels"] = labels[idx].astype(np.int64)  # (n,)
        out[f"{name}/index"] = idx.astype(np.int64)  # (n,)
    return out


def content_hash(arrays: Mapping[str, np.ndarray | torch.Tensor]) -> str:
    """sha256 over each array's name, dtype, shape and bytes, in name order.

    safetensors writes its JSON header in no fixed order, so the file's own hash is not
    stable; this one is, and it is the store's Dagster data version.
    """
    digest = hashlib.sha256()
    for key in sorted(arrays):
        value = arrays[key]
        array = value.numpy() if isinstance(value, torch.Tensor) else value
        array = np.ascontiguousarray(array)
        digest.update(f"{key}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.data)
    return digest.hexdigest()


def write_tensor_store(path: Path | str, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> str:
    """Write the store atomically (temporary file, fsync, rename); returns its content hash.

    A failure at any point leaves an existing store at `path` untouched.
    """
    digest = content_hash(arrays)
    meta = {"format_version": STORE_FORMAT_VERSION, "pixel_scale": "1/255", "content_sha256": digest, **metadata}
    with atomic_path(path) as tmp:
        save_file(dict(arrays), str(tmp), metadata={k: str(v) for k, v in meta.items()})
    return digest


def load_tensor_store(path: Path | str, *, verify: bool = True) -> TensorStore:
    """Read a tensor store (memory-mapped by safetensors, then held as CPU tensors).

    With `verify`, the arrays are hashed and compared with the hash recorded at write time.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"tensor store {path} does not exist; materialize the tensor store asset first.")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise DataError(f"tensor store {path} is unreadable ({exc}); re-materialize the tensor store asset.") from exc
    if verify and content_hash(tensors) != metadata.get("content_sha256"):
        raise DataError(f"tensor store {path} does not match its recorded content hash; re-materialize it.")
    splits = {}
    for name in SPLITS:
        try:
            splits[name] = Split(
                images=tensors[f"{name}/images"], labels=tensors[f"{name}/labels"], index=tensors[f"{name}/index"]
            )
        except KeyError as exc:
            raise DataError(f"tensor store {path} lacks {exc}; re-materialize the tensor store asset.") from exc
    return TensorStore(splits=splits, metadata=metadata)


def store_summary(store: TensorStore) -> dict[str, object]:
    """Counts and label histograms of each split, JSON-friendly."""
    return {
        name: {
            "count": len(split),
            "label_counts": np.bincount(split.labels.numpy(), minlength=10).tolist(),
        }
        for name, split in store.splits.items()
    }


# --- sanity checks (pure; the Dagster asset checks call these) --------------------------------


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one data sanity check."""

    passed: bool
    description: str
    details: Mapping[str, object] = field(default_factory=dict)


def check_shapes(store: TensorStore) -> CheckResult:
    bad = {n: list(s.images.shape) for n, s in store.splits.items() if tuple(s.images.shape[1:]) != IMAGE_HW}
    return CheckResult(not bad, "every image is 28x28" if not bad else f"wrong image shapes: {bad}", {"bad": bad})


def check_value_range(store: TensorStore) -> CheckResult:
    """Stored dtype is uint8 and the scaled images span exactly [0, 1] with no NaN."""
    details: dict[str, object] = {}
    ok = True
    for name, split in store.splits.items():
        x = split.float_images()
        lo, hi = float(x.min()), float(x.max())
        nan = int(torch.isnan(x).sum())
        details[name] = {"dtype": str(split.images.dtype), "min": lo, "max": hi, "nan": nan}
        ok &= split.images.dtype == torch.uint8 and lo == 0.0 and hi == 1.0 and nan == 0
    return CheckResult(bool(ok), "pixels are uint8, scale to [0, 1], no NaN", details)


def check_label_histogram(store: TensorStore) -> CheckResult:
    """train+val and test label counts equal the published ones for the dataset."""
    expected = OFFICIAL_LABEL_COUNTS.get(store.dataset)
    summary = store_summary(store)
    train_val = (np.array(summary["train"]["label_counts"]) + np.array(summary["val"]["label_counts"])).tolist()
    observed = {"train": train_val, "test": summary["test"]["label_counts"]}
    if expected is None:
        return CheckResult(False, f"no published label counts for {store.dataset}", {"observed": observed})
    ok = all(tuple(observed[s]) == expected[s] for s in ("train", "test"))
    return CheckResult(ok, "label histogram equals the published counts", {"observed": observed, "expected": expected})


def check_splits(store: TensorStore, expected_val_size: int) -> CheckResult:
    """Split sizes add up and no official index is in two splits."""
    train = set(store["train"].index.tolist())
    val = set(store["val"].index.tolist())
    shared = len(train & val)
    sizes = {n: len(s) for n, s in store.splits.items()}
    ok = shared == 0 and sizes["val"] == expected_val_size and all(len(s.images) == len(s.labels) for s in store.splits.values())
    return CheckResult(ok, "splits are disjoint and sized as configured", {"sizes": sizes, "shared_train_val": shared})


def store_metadata(raw: RawDataset, val_size: int, split_seed: int) -> dict[str, str]:
    """What the store says about itself."""
    return {
        "dataset": raw.dataset,
        "val_size": str(val_size),
        "split_seed": str(split_seed),
        "source_content_md5": json.dumps({key: f.content_md5 for key, f in raw.files.items()}, sort_keys=True),
    }
