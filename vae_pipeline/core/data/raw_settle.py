"""When a raw file has settled: left alone long enough that a copy in progress is not taken for new or broken data.

A 26 MB file copied slowly into the raw folder changes for minutes. Until it settles it is neither
a new data version (the raw-files sensor reports nothing) nor a corrupt file (the reader says
"still being written; wait", not "fetch it again").

The rule, one for both: a raw file has settled once it has been quiet for the settle time
(SETTLE_SECONDS unless the caller passes another): quiet since its modification time, or since
the first of consecutive looks that found the same size and modification time, whichever is
earlier. The modification time lets a file that was complete before anyone looked count at
once; the looks cover a file server whose clock runs ahead (mtimes in the future), for which the
mtime alone would never say "settled". Every write moves the mtime, so a copy that is still
writing never counts.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vae_pipeline.core.data.idx import RAW_FILES, RawDataset, TruncatedFileError, read_raw_dataset

# A minute: the raw-files sensor looks once a minute, and a copy that writes nothing for a whole
# minute has stalled rather than slowed down.
SETTLE_SECONDS = 60.0


@dataclass(frozen=True)
class FileLook:
    """One raw file as a look found it: what moves when it is written, and since when it has not moved."""

    size: int
    mtime_ns: int
    since_ns: int  # when a look first found this size and mtime (the clock of whoever looked)

    def same_as(self, other: FileLook) -> bool:
        return (self.size, self.mtime_ns) == (other.size, other.mtime_ns)


def raw_file_names() -> list[str]:
    """The names a raw folder is read under: each official file, gzipped or plain."""
    return [name for stem in RAW_FILES.values() for name in (f"{stem}.gz", stem)]


def look(directory: Path | str, previous: Mapping[str, FileLook], now_ns: int) -> dict[str, FileLook]:
    """Size and mtime of each raw file in `directory`, keeping `since_ns` from `previous` where neither moved."""
    found = {}
    for name in raw_file_names():
        try:
            st = os.stat(Path(directory) / name)
        except FileNotFoundError:  # absent, or removed between two names: either way not there now
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        seen = FileLook(size=st.st_size, mtime_ns=st.st_mtime_ns, since_ns=now_ns)
        before = previous.get(name)
        found[name] = FileLook(seen.size, seen.mtime_ns, before.since_ns) if before and before.same_as(seen) else seen
    return found


def same_files(a: Mapping[str, FileLook], b: Mapping[str, FileLook]) -> bool:
    """The same raw files with the same sizes and mtimes."""
    return a.keys() == b.keys() and all(a[name].same_as(b[name]) for name in a)


def unsettled(files: Mapping[str, FileLook], now_ns: int, settle_seconds: float) -> list[str]:
    """The names, sorted, of the files that have not yet been quiet for `settle_seconds` (see the module docstring)."""
    settle_ns = settle_seconds * 1e9
    return sorted(name for name, f in files.items() if now_ns - min(f.mtime_ns, f.since_ns) < settle_ns)


def read_raw_files(
    directory: Path | str,
    dataset: str = "mnist",
    *,
    verify_md5: bool = True,
    source: str = "configured",
    settle_seconds: float = SETTLE_SECONDS,
) -> RawDataset:
    """`read_raw_dataset`, except that a file cut short while it is still being written is said to be so.

    A truncated file that changed while it was read, or whose mtime is within the settle time, is
    most likely a copy in progress: the advice is to wait, not to delete it and fetch it again.
    """
    directory = Path(directory)
    before = look(directory, {}, time.time_ns())
    try:
        return read_raw_dataset(directory, dataset, verify_md5=verify_md5, source=source)
    except TruncatedFileError as exc:
        if exc.path is None:
            raise
        now = time.time_ns()
        after = look(directory, before, now)
        name = Path(exc.path).name
        if name not in after:
            raise
        changed = name not in before or not before[name].same_as(after[name])
        if not changed and name not in unsettled(after, now, settle_seconds):
            raise
        age = max(0, now - after[name].mtime_ns) / 1e9
        how = (
            "it changed while it was read" if changed
            else f"it ends early and was modified {age:.0f} s ago, within the settle time of {settle_seconds:g} s"
        )
        raise TruncatedFileError(
            f"{exc.path} is still being written ({how}); wait until the copy finishes, then run again. "
            "If nothing is writing it, it was cut short: delete it and fetch it again.",
            exc.path,
        ) from exc
