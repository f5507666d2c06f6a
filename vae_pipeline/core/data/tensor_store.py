"""The normalized tensor store: the seeded split, its content hash, and safetensors I/O.

The tensor store is one safetensors file: uint8 images plus a scale of 1/255 (lossless, a
quarter of float32's size, memory-mappable, no pickle), int64 labels and the index of each
image in its official file, for train, val and test. Its sha256 is the data version, and its
file name: stores are content-addressed (`<folder>/<dataset>/<content_sha256>.safetensors`), so
a second split never overwrites the store an earlier model was trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from vae_pipeline.core.atomic import atomic_path
from vae_pipeline.core.data.idx import DataError, RawDataset

STORE_FORMAT_VERSION = "1"
PIXEL_SCALE = 1.0 / 255.0  # stored uint8 * PIXEL_SCALE gives the [0, 1] image
SPLITS = ("train", "val", "test")


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
    _save(path, arrays, metadata, digest)
    return digest


def _save(path: Path | str, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str], digest: str) -> None:
    meta = {"format_version": STORE_FORMAT_VERSION, "pixel_scale": "1/255", "content_sha256": digest, **metadata}
    with atomic_path(path) as tmp:
        save_file(dict(arrays), str(tmp), metadata={k: str(v) for k, v in meta.items()})


def store_path(folder: Path | str, dataset: str, content_sha256: str) -> Path:
    """Where the store with this content lives: its name is its content hash."""
    return Path(folder) / dataset / f"{content_sha256}.safetensors"


@dataclass(frozen=True)
class StoredTensors:
    """Where `put_tensor_store` left the store, and what it had to do."""

    path: Path
    content_sha256: str
    action: str  # "written" (new), "reused" (an intact copy was there) or "rewritten" (a damaged copy was)
    damage: str | None = None  # what was wrong with the copy that was rewritten


def put_tensor_store(folder: Path | str, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> StoredTensors:
    """File the store under its content hash in `folder`; identical content is written once.

    An existing file at that path is reused only after it loads and its content hash matches
    (a cache is verified, not trusted); a damaged one is replaced atomically and the damage named.
    """
    digest = content_hash(arrays)
    path = store_path(folder, metadata["dataset"], digest)
    damage = None
    if path.exists():
        try:
            found = load_tensor_store(path).content_sha256
        except DataError as exc:
            damage = str(exc)
        else:
            if found == digest:
                return StoredTensors(path=path, content_sha256=digest, action="reused")
            damage = f"tensor store {path} holds content {found}, not the {digest} its name says"
    _save(path, arrays, metadata, digest)
    return StoredTensors(path=path, content_sha256=digest, action="written" if damage is None else "rewritten", damage=damage)


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
    except (SafetensorError, OSError) as exc:  # a damaged header, a truncated file
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


def store_metadata(raw: RawDataset, val_size: int, split_seed: int) -> dict[str, str]:
    """What the store says about itself."""
    return {
        "dataset": raw.dataset,
        "val_size": str(val_size),
        "split_seed": str(split_seed),
        "source_content_md5": json.dumps({key: f.content_md5 for key, f in raw.files.items()}, sort_keys=True),
    }
