"""The data folder: a local path or an object-store URL, and every path under it."""

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from vae_pipeline.core.atomic import atomic_path
from vae_pipeline.defs.storage.mirror import Mirror, is_url
from vae_pipeline.defs.store_checks import check_data_folder

DATA_DIR_ENV = "VAE_PIPELINE_DATA_DIR"
CACHE_DIR_ENV = "VAE_PIPELINE_CACHE_DIR"
MNIST_DIR_ENV = "VAE_PIPELINE_MNIST_DIR"


def default_data_dir() -> str:
    """The data folder: $VAE_PIPELINE_DATA_DIR, else ./data."""
    return os.environ.get(DATA_DIR_ENV, "data")


@functools.cache
def _mirror(url: str, local: Path) -> Mirror:
    return Mirror(url, local)


class PipelineStorage(dg.ConfigurableResource):
    """Where every file of the pipeline lives, under one data folder: a local path, or a URL that fsspec opens.

    With a URL (s3://bucket/vae, gs://..., file:///mnt/shared/vae) the pipeline works in a local copy
    (`cache_dir`) and the remote is the truth: a step pulls what it reads (`resolve`, `fetch`) and
    publishes what it wrote (`publish`), so a worker on another machine finds it. With a local path
    `root` is the data folder itself and pulling and publishing do nothing.
    """

    data_dir: str
    # The local copy of a remote data folder; None: $VAE_PIPELINE_CACHE_DIR, else ~/.cache/vae-pipeline/<hash of the URL>.
    cache_dir: str | None = None

    @property
    def is_remote(self) -> bool:
        return is_url(self.data_dir)

    @property
    def root(self) -> Path:
        """The local folder the pipeline reads and writes: the data folder, or the local copy of a remote one."""
        if not self.is_remote:
            return Path(self.data_dir).expanduser().resolve()
        cache = self.cache_dir or os.environ.get(CACHE_DIR_ENV)
        if cache is None:
            digest = hashlib.sha256(self.data_dir.rstrip("/").encode()).hexdigest()[:12]
            cache = Path.home() / ".cache" / "vae-pipeline" / digest
        return Path(cache).expanduser().resolve()

    @property
    def location(self) -> str:
        """The data folder as the user named it (a path or a URL), for messages."""
        return self.data_dir if self.is_remote else str(self.root)

    def path(self, *parts: str) -> Path:
        """A local path under the data folder to write; its parent folder exists. `publish` it when written."""
        path = self.root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def folder(self, *parts: str) -> Path:
        """A local folder under the data folder to write into, created if needed. `publish` what you write."""
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def fetch(self, *parts: str) -> Path:
        """A file or folder under the data folder as it is now, pulled from a remote data folder; it may not exist."""
        path = self.root.joinpath(*parts)
        if self.is_remote:
            self._mirror().pull(path.relative_to(self.root).as_posix())
        return path

    def working_folder(self, *parts: str) -> Path:
        """A folder a step reads and then writes (a model's checkpoint folder): pulled as it is now, created if absent."""
        path = self.fetch(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def publish(self, path: Path) -> None:
        """Put a written file, or a folder's files, into a remote data folder (one whole-object PUT each)."""
        if self.is_remote:
            self._mirror().push(Path(path).resolve())

    def discard(self, path: Path) -> None:
        """Remove a file from the data folder, remote included, so that no later pull brings it back."""
        path = Path(path)
        if self.is_remote:
            self._mirror().delete(self.relative(path))
        path.unlink(missing_ok=True)

    def relative(self, path: Path | str) -> str:
        """How a record (manifest, summary) names a file under the data folder: relative, POSIX-style.

        Records never hold the data folder's absolute path, so the folder can be moved or copied
        and pointed at with $VAE_PIPELINE_DATA_DIR, and a remote one read from any machine.
        """
        path = Path(path).resolve()
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            raise ValueError(f"{path} is outside the data folder {self.root}; records only name files inside it.") from None

    def url(self, path: Path) -> str:
        """Where a user finds a file of the data folder (in metadata, query snippets): its remote URL, else its local path."""
        if not self.is_remote:
            return str(path)
        return f"{self.data_dir.rstrip('/')}/{self.relative(path)}"

    def resolve(self, stored: str) -> Path:
        """The local file or folder a record names (see `relative`), pulled from a remote data folder."""
        path = Path(stored)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(
                f"the record names {stored!r}, not a path relative to the data folder; it was written by an older "
                f"version: re-materialize the asset that wrote it."
            )
        return self.fetch(*path.parts)

    def _mirror(self) -> Mirror:
        return _mirror(self.data_dir, self.root)

    def check_usable(self) -> None:
        """Refuse a data folder (or a remote one's local copy) that is a file or cannot be written, naming it and the fix."""
        check_data_folder(self.root, CACHE_DIR_ENV if self.is_remote else DATA_DIR_ENV)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Before the run's first step (in-process): a read-only folder fails here, not as a bare OSError mid-ingest.
        self.check_usable()


def write_json_atomic(path: Path, value: Any) -> None:
    """Write JSON so that readers never see half a file."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, sort_keys=True))
