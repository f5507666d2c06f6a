"""A local working copy of a remote data folder (an fsspec URL such as s3://bucket/vae): pull before reading, push after writing.

Torch, safetensors, pandas and matplotlib all write local files, and an object store has no rename,
so the pipeline keeps writing atomically into a local folder and publishes each finished file with
one PUT (write-then-put). An object PUT replaces the whole object at once, so a reader on another
machine sees the old object or the new one. The remote is the truth: pulling a file synced before
that the remote no longer holds removes the local copy, so a wiped bucket is never papered over by
a stale cache (a file never synced is a step's output on its way up, and is left alone).

Each synced file has a small record beside it in `<local>/.mirror/` holding the remote object's
identity (ETag or modification time, and size, as the filesystem reports them) and the local
file's size and mtime. A pull downloads only when the remote object or the local file changed
since the last sync; a push uploads only when the local file changed.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from vae_pipeline.core.atomic import atomic_path

RECORDS = ".mirror"  # under the local folder: one JSON record per synced file


def is_url(location: str) -> bool:
    """Whether a data folder setting names a remote location (s3://, gs://, memory://, file://...) rather than a local path."""
    return "://" in location


class MirrorError(OSError):
    """The remote data folder could not be read or written; the message names the object and the fix."""


class Mirror:
    """The remote folder `url` and its local copy `local`; paths are POSIX-style, relative to both."""

    def __init__(self, url: str, local: Path) -> None:
        self.url = url.rstrip("/")
        self.local = local
        try:
            self.fs, self.remote_root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as exc:
            raise MirrorError(
                f"cannot open the data folder {url}: {exc}. Install the fsspec filesystem for its scheme "
                "(s3fs for s3://, gcsfs for gs://, adlfs for az://) or set the data folder to a local path."
            ) from exc
        self.remote_root = self.remote_root.rstrip("/")

    def remote(self, relative: str) -> str:
        return f"{self.remote_root}/{relative}" if relative else self.remote_root

    def pull(self, relative: str) -> Path:
        """Make the local copy of a file or folder equal the remote's; returns the local path.

        A file synced before that the remote no longer holds is removed locally (the returned path
        then does not exist). A file never synced is left alone: it is a step's output on its way to
        the remote, and processes of one machine share the local copy.
        """
        target = self.local / relative
        remote = self.remote(relative)
        self.fs.invalidate_cache(remote)  # another process may have written it since this one listed
        try:
            info = self.fs.info(remote)
        except FileNotFoundError:
            self._forget(relative)
            return target
        except OSError as exc:
            raise self._error("read", remote, exc) from exc
        if info["type"] == "directory":
            try:
                listing = self.fs.find(remote, detail=True)
            except OSError as exc:
                raise self._error("read", remote, exc) from exc
            held = {self._relative(name): entry for name, entry in listing.items() if entry["type"] == "file"}
            for name, file_info in held.items():
                self._pull_file(name, file_info)
            if target.is_dir():  # the remote is the truth: drop what it no longer holds
                for path in list(target.rglob("*")):
                    name = path.relative_to(self.local).as_posix()
                    if path.is_file() and name not in held:
                        self._forget(name)
            target.mkdir(parents=True, exist_ok=True)
            return target
        self._pull_file(relative, info)
        return target

    def push(self, path: Path) -> None:
        """Publish a local file, or every file of a local folder, under the same relative name."""
        path = Path(path)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                self.push(child)
            return
        relative = path.relative_to(self.local).as_posix()
        remote = self.remote(relative)
        record = self._read_record(relative)
        if record is not None and record["local"] == _stat(path):
            if self._identity(remote) == record["remote"]:
                return  # neither side changed since the last sync
        try:
            if isinstance(self.fs, LocalFileSystem):  # a mounted folder: copy beside it, then rename over
                partial = f"{remote}.{uuid.uuid4().hex}.partial"
                self.fs.makedirs(posixpath.dirname(remote), exist_ok=True)
                try:
                    self.fs.put_file(str(path), partial)
                    self.fs.mv(partial, remote)
                finally:
                    if self.fs.exists(partial):
                        self.fs.rm_file(partial)
            else:  # an object store: one PUT replaces the whole object
                self.fs.put_file(str(path), remote)
            self._write_record(relative, self._identity(remote), _stat(path))
        except OSError as exc:
            raise self._error("write", remote, exc) from exc

    def delete(self, relative: str) -> None:
        """Remove a file from both sides (a damaged or superseded file that must not come back on the next pull)."""
        remote = self.remote(relative)
        try:
            if self.fs.exists(remote):
                self.fs.rm_file(remote)
        except OSError as exc:
            raise self._error("delete", remote, exc) from exc
        self.fs.invalidate_cache(remote)
        (self.local / relative).unlink(missing_ok=True)
        self._record_path(relative).unlink(missing_ok=True)

    def _pull_file(self, relative: str, info: dict) -> None:
        target = self.local / relative
        remote = self.remote(relative)
        identity = _identity(info)
        record = self._read_record(relative)
        if record is not None and target.is_file() and record["remote"] == identity and record["local"] == _stat(target):
            return
        try:
            with atomic_path(target) as tmp:
                self.fs.get_file(remote, str(tmp))
        except FileNotFoundError:  # removed between the listing and the download
            self._forget(relative)
            return
        except OSError as exc:
            raise self._error("read", remote, exc) from exc
        self._write_record(relative, identity, _stat(target))

    def _relative(self, remote_name: str) -> str:
        return remote_name[len(self.remote_root):].lstrip("/")

    def _identity(self, remote: str) -> str | None:
        self.fs.invalidate_cache(remote)
        try:
            return _identity(self.fs.info(remote))
        except FileNotFoundError:
            return None

    def _record_path(self, relative: str) -> Path:
        return self.local / RECORDS / f"{relative}.json"

    def _read_record(self, relative: str) -> dict | None:
        try:
            return json.loads(self._record_path(relative).read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def _write_record(self, relative: str, remote_key: str | None, local: list[int]) -> None:
        with atomic_path(self._record_path(relative)) as tmp:
            tmp.write_text(json.dumps({"remote": remote_key, "local": local}))

    def _forget(self, relative: str) -> None:
        """Drop the local copy of what the remote no longer holds: of a file or a folder's files, those synced before."""
        target = self.local / relative
        if target.is_dir():
            for path in list(target.rglob("*")):
                name = path.relative_to(self.local).as_posix()
                if path.is_file() and self._read_record(name) is not None:
                    self._forget(name)
            return
        if self._read_record(relative) is not None:
            target.unlink(missing_ok=True)
            self._record_path(relative).unlink(missing_ok=True)

    def _error(self, verb: str, remote: str, exc: OSError) -> MirrorError:
        return MirrorError(
            exc.errno,
            f"could not {verb} {self.fs.unstrip_protocol(remote)}: {exc}. Check the credentials and that the bucket "
            "exists (for s3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL); files already stored are unchanged.",
        )


def _identity(info: dict) -> str:
    """What identifies one version of a remote object: its ETag (object stores) or modification time, and its size.

    Only fields that a listing and a lookup report alike: an object store's listing and its HEAD give
    the same ETag, but not always the same time zone for the same time.
    """
    for field in ("ETag", "etag", "md5Hash", "mtime", "LastModified", "last_modified", "updated", "created"):
        if info.get(field) is not None:
            value = info[field]
            value = value.timestamp() if hasattr(value, "timestamp") else value
            return json.dumps([field, str(value), info.get("size")])
    return json.dumps(["size", info.get("size")])


def _stat(path: Path) -> list[int]:
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]
