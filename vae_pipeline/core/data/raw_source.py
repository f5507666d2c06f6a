"""Where the raw IDX files come from: a configured folder, files under the data folder, or a download."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from vae_pipeline.core.data.idx import RAW_FILES, DataError, md5_of

# torchvision's folder names, so a torchvision download and our local lookup agree.
TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


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


@dataclass(frozen=True)
class RawObservation:
    """What is in a watched raw folder now: each file's md5 as on disk, and one version over all four."""

    directory: Path
    md5: dict[str, str] = field(default_factory=dict)  # key (train_images, ...) -> md5 of the file on disk
    missing: tuple[str, ...] = ()  # file stems not found (neither .gz nor plain)

    @property
    def data_version(self) -> str:
        """Changes exactly when a file's bytes change, one appears or one goes; "absent" when none is there."""
        if not self.md5:
            return "absent"
        parts = [f"{key}={self.md5.get(key, 'missing')}" for key in sorted(RAW_FILES)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def observe_raw_files(directory: Path | str) -> RawObservation:
    """md5 of each of the four IDX files in `directory` (.gz preferred, as the reader does); reads nothing else."""
    directory = Path(directory)
    md5, missing = {}, []
    for key, stem in RAW_FILES.items():
        found = next((p for p in (directory / f"{stem}.gz", directory / stem) if p.is_file()), None)
        if found is None:
            missing.append(stem)
        else:
            md5[key] = md5_of(found)
    return RawObservation(directory=directory, md5=md5, missing=tuple(missing))
