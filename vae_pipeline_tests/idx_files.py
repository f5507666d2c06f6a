"""Write small IDX sets for tests: slices of real MNIST, deliberately broken and hostile files."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from vae_pipeline.core.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, RAW_FILES, read_raw_dataset

BOMB_MEMBER_BYTES = 16 << 20  # zeros per gzip member of a bomb: compressed once, written many times


def idx_header(magic: int, dims: tuple[int, ...]) -> bytes:
    """An IDX header: magic, then each dimension as a big-endian uint32 (any value, for hostile files)."""
    return magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in dims)


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """The IDX encoding of a uint8 array (magic from its rank unless given)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x00000800 | array.ndim
    return idx_header(magic, array.shape) + array.tobytes()


def tiny_arrays(n_train: int = 20, n_test: int = 6, hw: tuple[int, int] = (28, 28)) -> dict[str, np.ndarray]:
    """A random IDX set: images of `hw` pixels (0 and 255 in each one) and labels cycling 0..9."""
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


def write_mnist_slice(source: Path, folder: Path, n_train: int, n_test: int, dataset: str = "mnist") -> Path:
    """The first n_train / n_test images and labels of real MNIST (or Fashion-MNIST), as an IDX set (not official: skip md5)."""
    raw = read_raw_dataset(source, dataset)
    return write_idx_set(
        folder,
        {
            "train_images": raw.train_images[:n_train],
            "train_labels": raw.train_labels[:n_train],
            "test_images": raw.test_images[:n_test],
            "test_labels": raw.test_labels[:n_test],
        },
    )


def write_gzip_bomb(path: Path, header: bytes, expanded_bytes: int) -> Path:
    """A .gz whose IDX header promises an ordinary payload but whose stream expands to `expanded_bytes`.

    Concatenated gzip members are one gzip stream (RFC 1952, section 2.2), so a member of zeros is
    compressed once and written again and again: a 4 GiB expansion costs a 4 MB file and no CPU.
    """
    zeros = bytes(BOMB_MEMBER_BYTES)
    member = gzip.compress(zeros, mtime=0)
    with open(path, "wb") as fh:
        fh.write(gzip.compress(header + zeros, mtime=0))
        fh.writelines(member for _ in range(expanded_bytes // BOMB_MEMBER_BYTES - 1))
    return path


def write_bomb_set(folder: Path, expanded_bytes: int) -> Path:
    """An IDX set whose training images are a gzip bomb behind a header promising 60000x28x28.

    The other three files are valid and agree with that header, so the reader gets past every
    header check and meets the bomb while reading the payload.
    """
    arrays = tiny_arrays(n_train=1, n_test=10)
    arrays["train_labels"] = (np.arange(60_000) % 10).astype(np.uint8)
    write_idx_set(folder, arrays)
    write_gzip_bomb(folder / f"{RAW_FILES['train_images']}.gz", idx_header(IDX_IMAGES_MAGIC, (60_000, 28, 28)), expanded_bytes)
    return folder


# Run in a fresh interpreter, and measured with the kernel's per-address-space figures (VmRSS,
# VmHWM), not ru_maxrss: on Linux a child's ru_maxrss starts at its parent's resident size (it
# survives fork and exec), so under a large pytest process it would hide the read entirely.
# Writing 5 to clear_refs resets VmHWM to the current resident size, so the peak is the read's own.
_MEASURE_READ = """
import json, resource, sys
from vae_pipeline.core.data.idx import DataError, read_raw_dataset

def status_kib(field):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))

rss_before_kib = status_kib("VmRSS")
maxrss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    hwm_reset = True
except OSError:
    hwm_reset = False  # then VmHWM still holds the import's peak: the figure is an upper bound
try:
    read_raw_dataset(sys.argv[1], "mnist", verify_md5=sys.argv[2] == "on")
    refusal = None
except DataError as exc:
    refusal = str(exc)
peak_kib = status_kib("VmHWM")
print(json.dumps({
    "refusal": refusal,
    "rss_before_mib": rss_before_kib / 1024,
    "peak_delta_mib": (peak_kib - rss_before_kib) / 1024,
    "hwm_reset": hwm_reset,
    "ru_maxrss_delta_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss_before_kib) / 1024,
}))
"""


def measure_read(folder: Path, *, verify_md5: bool) -> dict:
    """Read an IDX set with `read_raw_dataset` in a fresh interpreter and measure its memory (Linux).

    Returns the DataError's message ("refusal", None if the set was accepted), the resident size
    after imports ("rss_before_mib") and the peak resident size above it during the read
    ("peak_delta_mib"), in MiB. "ru_maxrss_delta_mib" is kept for reference only (see above).
    """
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE_READ, str(folder), "on" if verify_md5 else "off"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])
