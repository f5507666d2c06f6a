"""Atomic file writes: readers see the old file or the new one, never half of one.

The new file is written as a hidden temporary beside the target, `.<name>.<host>.<pid>.<random>.tmp`,
and renamed over it. A process killed mid-write leaves that file behind; the next atomic write
into the same folder removes such leftovers, but never one a live writer is still filling (two
runs at once, or workers on other machines sharing the folder):

- from this host (same host name and process-id space) and a pid that no longer runs: removed now;
- any other (from another host, whose pids cannot be checked from here; a pid that runs, which may
  be a reused one; or named before host and pid were in the name, `.<name>.<random>.tmp`, looked
  at only beside a target of that name): removed once untouched for LEFTOVER_MAX_AGE_S (a day).
  A live writer touches its file far more often than that.

When in doubt a leftover stays: erring that way costs some disk for a day, the other way a broken write.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

LEFTOVER_MAX_AGE_S = 24 * 3600
# What mkstemp puts between prefix and suffix: 8 characters of this alphabet (CPython's tempfile).
_RANDOM = r"[a-z0-9_]{8}"
# `.<name>.<host>.<pid>.<random>.tmp`; <host> never holds a dot (see `_host`), so the name splits from the right.
_TEMP = re.compile(rf"\.(?P<target>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>[0-9]+)\.{_RANDOM}\.tmp")


@functools.cache
def _host() -> str:
    """This host as temporary names record it: the host name, plus where Linux tells it, its process-id space.

    Pids mean something only inside one pid namespace of one boot, and host names repeat (cloned
    machines, containers sharing the host's name): the boot id and the namespace make "this host"
    mean "a pid here is a pid there".
    """
    name = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        space = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux: the host name alone
        return name
    return f"{name}_{hashlib.sha256(f'{boot} {space}'.encode()).hexdigest()[:8]}"


def _runs(pid: int) -> bool:
    """Whether a process with this pid exists on this host (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _is_leftover(entry: os.DirEntry, target: str, host: str, now: float) -> bool:
    """Whether `entry` is a temporary file of a writer that is gone (the rule in the module docstring)."""
    if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
        return False
    found = _TEMP.fullmatch(entry.name)
    # os.name: on Windows os.kill(pid, 0) would end the process rather than look at it.
    if found is not None and found["host"] == host and os.name == "posix" and not _runs(int(found["pid"])):
        return True
    if found is None and not re.fullmatch(rf"\.{re.escape(target)}\.{_RANDOM}\.tmp", entry.name):
        return False  # not a name this module writes
    return now - entry.stat(follow_symlinks=False).st_mtime > LEFTOVER_MAX_AGE_S


def remove_leftovers(folder: Path | str, target: str) -> list[Path]:
    """Remove the temporary files of killed writers from `folder`; returns what was removed.

    `target` is the name about to be written: old-style leftovers (no host, no pid) are looked at
    only beside it. A leftover that cannot be removed is logged and left; it never fails a write.
    """
    host, now, removed = _host(), time.time(), []
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:  # a folder that cannot be listed may still take the write: that is for the write to say
        logger.warning(f"could not look for leftover temporary files in {folder} ({exc})")
        return []
    for entry in entries:
        try:
            if not (entry.is_file(follow_symlinks=False) and _is_leftover(entry, target, host, now)):
                continue
            os.unlink(entry.path)
        except FileNotFoundError:  # its writer renamed it, or another writer removed it first
            continue
        except OSError as exc:
            logger.warning(f"could not remove the leftover temporary file {entry.path} ({exc}); remove it by hand")
            continue
        logger.info(f"removed {entry.path}, the temporary file of a write that was killed")
        removed.append(Path(entry.path))
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class WriteError(OSError):
    """A file could not be written (disk full, read-only, no permission); the message names the path and the fix."""


def write_error(path: Path, exc: OSError) -> WriteError:
    """The one "could not write <path>" error, for any write that failed (MLflow's own writes too)."""
    reason = exc.strerror or str(exc)
    return WriteError(
        exc.errno,
        f"could not write {path}: {reason}. Free space on that disk or make the folder writable; for the pipeline, "
        "$VAE_PIPELINE_DATA_DIR can point the data folder at another disk. Files already there are unchanged.",
    )


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync and rename it over `path`.

    On any failure the temporary file is removed and an existing `path` is left untouched; the
    temporary files of earlier writers that were killed are removed first (see the module docstring).
    An OSError while writing (a full disk, a read-only folder) becomes a `WriteError` that names
    `path`, whatever library did the writing. The file gets the usual permissions (0666 less the
    umask), not mkstemp's private 0600.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path.parent, path.name)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.{_host()}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise write_error(path, exc) from exc
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except WriteError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
