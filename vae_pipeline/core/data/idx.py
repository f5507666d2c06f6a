"""Reading and verifying raw IDX files: the official checksums and label counts, parsing, the four-file set.

A file is read as a stream: its header first, checked for sanity before any size is computed
from it, then exactly the payload the header promises, in chunks, hashed on the way. A file that
holds more than it promises (a decompression bomb, trailing junk) is refused after one extra
chunk, so memory stays at the promised size whatever the file expands to.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import math
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

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

# Classes per dataset: a label outside 0..n-1 is refused at ingest, md5 check on or off.
DATASET_CLASSES = {"mnist": 10, "fashion_mnist": 10}

IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
IMAGE_HW = (28, 28)  # the only image size this pipeline reads; the model's input layer assumes it

# Bounds on what a header may promise, checked before anything is allocated. The official training
# files hold 60,000 items; a million bounds one images file at 784 MB. The four files together may
# promise at most 1 GiB (the official set promises 54,950,000 bytes): the arrays are held in
# memory while the store is built, so the cap is on memory, not on disk.
MAX_ITEMS_PER_FILE = 1_000_000
MAX_DATASET_BYTES = 1 << 30
READ_CHUNK_BYTES = 1 << 20  # decompressed bytes read (and hashed) per step


class DataError(ValueError):
    """Raw data or a tensor store is unusable; the message names the file and the fix."""


class TruncatedFileError(DataError):
    """A raw file ends before its data does: a partial download, or a copy that is still under way.

    Its own type so that a reader who can tell the two apart (core/data/raw_settle.py looks at the file's
    modification time) says "wait" for a copy in progress instead of "fetch it again".
    """

    def __init__(self, message: str, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path = path  # the file that ends early


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


# --- reading raw IDX files ------------------------------------------------------------------


def md5_of(path: Path, chunk: int = READ_CHUNK_BYTES) -> str:
    """md5 of a file as it is on disk, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class IdxHeader:
    """An IDX header that passed the sanity checks: its payload size is bounded and exact."""

    magic: int
    dims: tuple[int, ...]  # (count, 28, 28) for images, (count,) for labels
    raw: bytes  # the header bytes as read, part of the content md5

    @property
    def count(self) -> int:
        return self.dims[0]

    @property
    def payload_bytes(self) -> int:
        # Python ints cannot overflow, and the dims were bounded before this is ever computed.
        return math.prod(self.dims)


@contextlib.contextmanager
def _gzip_errors(source: Path | str) -> Iterator[None]:
    """Turn the gzip module's errors, raised at any read, into one DataError naming the file."""
    try:
        yield
    except EOFError as exc:  # the gzip stream stops before its end marker: the file was cut short
        raise TruncatedFileError(
            f"{source} is a truncated or corrupt gzip file ({exc}); delete it and fetch it again.", source
        ) from exc
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{source} is a truncated or corrupt gzip file ({exc}); delete it and fetch it again.") from exc


@contextlib.contextmanager
def open_idx_stream(path: Path) -> Iterator[BinaryIO]:
    """The decompressed bytes of an IDX file, .gz or plain, as a stream (nothing is read ahead)."""
    if not path.is_file():
        raise DataError(f"{path} does not exist; put the official file there or point the source folder elsewhere.")
    if path.suffix != ".gz":
        with open(path, "rb") as fh:
            yield fh
        return
    with open(path, "rb") as fh:
        first = fh.read(4)
    if len(first) < 2:  # an empty file is where every download and copy starts
        raise TruncatedFileError(
            f"{path} holds {len(first)} bytes, too few for gzip data; delete it and fetch it again.", path
        )
    if first[:2] != b"\x1f\x8b":
        raise DataError(
            f"{path} is named .gz but is not gzip data (first bytes {first.hex()}); "
            "it is probably an HTML error page or a partial download: delete it and fetch it again."
        )
    with gzip.open(path, "rb") as stream:
        yield stream


def _read_up_to(stream: BinaryIO, n: int) -> bytes:
    """At most n bytes; fewer only at the end of the stream."""
    parts, got = [], 0
    while got < n and (block := stream.read(n - got)):
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def read_idx_header(stream: BinaryIO, expected_magic: int, source: Path | str = "<bytes>") -> IdxHeader:
    """Read and check an IDX header, before the payload: magic, rank, image size and item count.

    Every bound is checked on the header's own numbers before any product is taken, so a
    header promising 2**31 x 2**31 x 2**31 is a DataError here, not an overflow or an allocation.
    """
    kind = "images" if expected_magic == IDX_IMAGES_MAGIC else "labels"
    with _gzip_errors(source):
        start = _read_up_to(stream, 4)
    if len(start) < 4:
        raise TruncatedFileError(
            f"{source} is truncated: {len(start)} bytes, too short for an IDX header; fetch it again.", source
        )
    magic = int.from_bytes(start, "big")
    if magic != expected_magic:
        raise DataError(
            f"{source} has magic number 0x{magic:08x}, expected 0x{expected_magic:08x} for IDX {kind}; "
            "it is not an MNIST-format file (or images and labels were swapped)."
        )
    ndim = expected_magic & 0xFF  # the magic's last byte is the rank, and it matched
    with _gzip_errors(source):
        rest = _read_up_to(stream, 4 * ndim)
    if len(rest) < 4 * ndim:
        raise TruncatedFileError(f"{source} is truncated inside its header; fetch it again.", source)
    dims = tuple(int.from_bytes(rest[4 * i : 4 * i + 4], "big") for i in range(ndim))
    if kind == "images" and dims[1:] != IMAGE_HW:
        raise DataError(
            f"{source} holds images of {dims[1]}x{dims[2]}, expected {IMAGE_HW[0]}x{IMAGE_HW[1]}; "
            "this pipeline reads MNIST-format data only (or the header is corrupt: fetch the file again)."
        )
    if not 1 <= dims[0] <= MAX_ITEMS_PER_FILE:
        raise DataError(
            f"{source} promises {dims[0]:,} {kind}; this pipeline reads 1 to {MAX_ITEMS_PER_FILE:,} per file "
            "(the official training file holds 60,000). The header is corrupt or the file is not an MNIST-format "
            "set: fetch the official file again."
        )
    return IdxHeader(magic=magic, dims=dims, raw=start + rest)


def read_idx_payload(stream: BinaryIO, header: IdxHeader, source: Path | str = "<bytes>") -> tuple[np.ndarray, str]:
    """Read exactly the payload `header` promises, in chunks; refuse a stream holding more or less.

    Returns the array and the md5 of the decompressed file (header and payload), hashed while
    streaming. Memory is the promised array plus one chunk: a stream that goes on past the
    payload is refused after a single extra chunk, however far it would expand.
    """
    expected = header.payload_bytes
    digest = hashlib.md5(header.raw)
    array = np.empty(expected, dtype=np.uint8)  # (count * 28 * 28,) or (count,)
    view = memoryview(array)
    filled = 0
    with _gzip_errors(source):
        while filled < expected:
            n = stream.readinto(view[filled : filled + READ_CHUNK_BYTES])
            if not n:
                raise TruncatedFileError(
                    f"{source} is truncated: the header promises {header.dims} = {expected:,} bytes but only "
                    f"{filled:,} follow; fetch it again.",
                    source,
                )
            digest.update(view[filled : filled + n])
            filled += n
        extra = stream.read(READ_CHUNK_BYTES)  # at the end of the stream this also checks the gzip CRC
    if extra:
        raise DataError(
            f"{source} holds more than its header promises: at least {len(extra):,} bytes follow the {header.dims} "
            f"payload of {expected:,} bytes, and reading stopped there. It is not a valid IDX file (possibly a "
            "decompression bomb): delete it and fetch the official file again."
        )
    return array.reshape(header.dims), digest.hexdigest()  # (count, 28, 28) or (count,)


def parse_idx(data: bytes, expected_magic: int, source: Path | str = "<bytes>") -> np.ndarray:
    """Parse one unsigned-byte IDX payload held in memory, with the same checks as a file."""
    stream = io.BytesIO(data)
    header = read_idx_header(stream, expected_magic, source)
    return read_idx_payload(stream, header, source)[0]


def check_labels(labels: np.ndarray, dataset: str, source: Path | str = "<bytes>") -> None:
    """Refuse labels outside the dataset's classes (uint8 labels would wrap to negatives further on)."""
    n_classes = DATASET_CLASSES[dataset]
    counts = np.bincount(labels, minlength=256)  # (256,): labels are uint8
    bad = {value: int(counts[value]) for value in np.flatnonzero(counts[n_classes:]) + n_classes}
    if bad:
        listed = ", ".join(f"{value} ({count:,} label{'s' if count > 1 else ''})" for value, count in bad.items())
        raise DataError(
            f"{source} holds labels outside {dataset}'s classes 0..{n_classes - 1}: {listed}. The file is corrupt "
            f"or from another dataset: fetch the official file again, or relabel a custom set to 0..{n_classes - 1} "
            "(this is checked whether or not verify_md5 is on)."
        )


def _find_file(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{directory / (stem + '.gz')} is missing (neither {stem}.gz nor {stem} is in {directory}); "
        "the folder needs all four official IDX files."
    )


def _check_promises(directory: Path, paths: Mapping[str, Path], headers: Mapping[str, IdxHeader]) -> None:
    """Images and labels agree on their counts, and the set as a whole fits the memory cap."""
    for split in ("train", "test"):
        images, labels = headers[f"{split}_images"], headers[f"{split}_labels"]
        if images.count != labels.count:
            raise DataError(
                f"{paths[f'{split}_images']} has {images.count} images but {paths[f'{split}_labels']} has "
                f"{labels.count} labels; the two files come from different sets, fetch matching ones."
            )
    total = sum(h.payload_bytes for h in headers.values())
    if total > MAX_DATASET_BYTES:
        promised = ", ".join(f"{paths[key].name}: {h.dims}" for key, h in headers.items())
        raise DataError(
            f"the IDX files in {directory} promise {total:,} bytes together ({promised}), more than the cap of "
            f"{MAX_DATASET_BYTES:,} (the official set promises 54,950,000). The set is held in memory while the "
            "store is built: use the official files or a smaller set."
        )


def read_raw_dataset(
    directory: Path | str,
    dataset: str = "mnist",
    *,
    verify_md5: bool = True,
    source: str = "configured",
) -> RawDataset:
    """Read and check the four IDX files in `directory`.

    All four headers are checked before any payload is read. Labels must lie in the dataset's
    classes. With `verify_md5`, each file must also match the official md5 of `dataset`; turn it
    off only for a deliberately different IDX set (a slice, say).
    """
    if dataset not in DATASET_CLASSES:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASET_CLASSES)}.")
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(
            f"the raw data folder {directory} does not exist; create it with the four IDX files "
            "or point VAE_PIPELINE_MNIST_DIR (or the asset's source_dir config) at the right folder."
        )
    paths = {key: _find_file(directory, stem) for key, stem in RAW_FILES.items()}
    magics = {key: IDX_IMAGES_MAGIC if key.endswith("images") else IDX_LABELS_MAGIC for key in RAW_FILES}
    official = OFFICIAL_CONTENT_MD5.get(dataset, {})
    arrays: dict[str, np.ndarray] = {}
    files: dict[str, RawFile] = {}
    with contextlib.ExitStack() as open_files:
        streams = {key: open_files.enter_context(open_idx_stream(path)) for key, path in paths.items()}
        headers = {key: read_idx_header(streams[key], magics[key], paths[key]) for key in RAW_FILES}
        _check_promises(directory, paths, headers)
        for key, path in paths.items():
            arrays[key], content_md5 = read_idx_payload(streams[key], headers[key], path)
            if key.endswith("labels"):
                check_labels(arrays[key], dataset, path)
            files[key] = RawFile(path=path, md5=md5_of(path), content_md5=content_md5, verified=content_md5 == official.get(key))
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
