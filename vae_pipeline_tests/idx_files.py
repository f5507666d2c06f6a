"""Write small IDX sets for tests: slices of real MNIST and deliberately broken files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from vae_pipeline.core.data import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, RAW_FILES, read_raw_dataset


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """The IDX encoding of a uint8 array (magic from its rank unless given)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x00000800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_idx_set(folder: Path, arrays: dict[str, np.ndarray], *, compress: bool = True) -> Path:
    """Write the four files named as the official ones into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in RAW_FILES.items():
        data = idx_bytes(arrays[key], IDX_IMAGES_MAGIC if key.endswith("images") else IDX_LABELS_MAGIC)
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / stem).write_bytes(data)
    return folder


def write_mnist_slice(source: Path, folder: Path, n_train: int, n_test: int) -> Path:
    """The first n_train / n_test images and labels of real MNIST, as an IDX set (not official: skip md5)."""
    raw = read_raw_dataset(source, "mnist")
    return write_idx_set(
        folder,
        {
            "train_images": raw.train_images[:n_train],
            "train_labels": raw.train_labels[:n_train],
            "test_images": raw.test_images[:n_test],
            "test_labels": raw.test_labels[:n_test],
        },
    )
