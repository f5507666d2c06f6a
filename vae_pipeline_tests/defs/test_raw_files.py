"""The raw-files sensor: an event exactly when the watched folder's md5s change and its files settled, else none;
and the ingest's word for a file that is still being copied."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import pytest

from vae_pipeline.core.data.idx import RAW_FILES, DataError
from vae_pipeline.defs.assets.ingest import mnist_raw
from vae_pipeline.defs.raw_files import DATA_VERSION_TAG, RAW_FILES_ASSET, observe_raw_files
from vae_pipeline.defs.resources import default_resources
from vae_pipeline.defs.storage.folder import PipelineStorage
from vae_pipeline_tests.idx_files import tiny_arrays, write_idx_set

SETTLE_ENV = "VAE_PIPELINE_RAW_SETTLE_SECONDS"
LONG_AGO_S = 600  # well past the default settle time (60 s)


class Watcher:
    def __init__(self, tmp_path: Path) -> None:
        self.storage = PipelineStorage(data_dir=str(tmp_path / "data"))
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor: str | None = None

    def look(self) -> dg.SensorResult | dg.SkipReason:
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, resources={"storage": self.storage})
        result = observe_raw_files(context)
        if isinstance(result, dg.SensorResult):
            self.cursor = result.cursor or self.cursor
            for event in result.asset_events or []:
                self.instance.report_runless_asset_event(event)
        return result


def _events(result) -> list[dg.AssetMaterialization]:
    return list(result.asset_events or []) if isinstance(result, dg.SensorResult) else []


@pytest.fixture
def watched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "drop"
    folder.mkdir()
    monkeypatch.setenv("VAE_PIPELINE_MNIST_DIR", str(folder))
    return folder


def _age(path: Path, seconds: float = LONG_AGO_S) -> None:
    """Make `path` look last written `seconds` ago: a copy that finished then."""
    past = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(past, past))


def _drop(folder: Path, content: bytes) -> None:
    """A drop of the four files that finished copying a while ago."""
    for stem in RAW_FILES.values():
        (folder / f"{stem}.gz").write_bytes(content + stem.encode())
        _age(folder / f"{stem}.gz")


def _versions(watcher: Watcher) -> int:
    return len(watcher.instance.fetch_materializations(RAW_FILES_ASSET.key, limit=100).records)


def test_an_event_exactly_when_contents_change(tmp_path: Path, watched: Path) -> None:
    watcher = Watcher(tmp_path)
    (first,) = _events(watcher.look())  # nothing there yet is a state too: the folder's version is "absent"
    assert first.asset_key == RAW_FILES_ASSET.key and first.tags[DATA_VERSION_TAG] == "absent"
    _drop(watched, b"one")
    (second,) = _events(watcher.look())
    assert second.tags[DATA_VERSION_TAG] not in ("absent", first.tags[DATA_VERSION_TAG])
    assert set(second.metadata["md5"].data) == set(RAW_FILES)
    assert isinstance(watcher.look(), dg.SkipReason)  # untouched: not even hashed
    for path in watched.iterdir():  # touched, same bytes: hashed, no event
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    touched = watcher.look()
    assert _events(touched) == [] and "contents unchanged" in touched.skip_reason.skip_message
    _drop(watched, b"two")
    (third,) = _events(watcher.look())
    assert third.tags[DATA_VERSION_TAG] != second.tags[DATA_VERSION_TAG]


def test_a_lost_cursor_does_not_report_the_same_version_again(tmp_path: Path, watched: Path) -> None:
    watcher = Watcher(tmp_path)
    _drop(watched, b"one")
    assert len(_events(watcher.look())) == 1
    watcher.cursor = None  # a sensor reset in the UI
    again = watcher.look()
    assert _events(again) == [] and "contents unchanged" in again.skip_reason.skip_message


def test_a_file_still_being_copied_becomes_one_new_version_once_it_settled(tmp_path: Path, watched: Path) -> None:
    watcher = Watcher(tmp_path)
    _drop(watched, b"one")
    (before,) = _events(watcher.look())
    copying = watched / "train-images-idx3-ubyte.gz"
    copying.write_bytes(b"the first part")  # a slow copy of a new file begins: written to just now
    for _ in range(3):  # three looks while it grows
        growing = watcher.look()
        assert _events(growing) == []
        message = growing.skip_reason.skip_message
        assert "train-images-idx3-ubyte.gz still being written" in message
        assert f"stays {before.tags[DATA_VERSION_TAG]}" in message  # the previous version stands
        with copying.open("ab") as fh:
            fh.write(b" and more")
    _age(copying, 120)  # the copy finished two minutes ago
    (after,) = _events(watcher.look())
    assert after.tags[DATA_VERSION_TAG] != before.tags[DATA_VERSION_TAG]
    assert _events(watcher.look()) == []
    assert _versions(watcher) == 2  # the first drop and the finished copy, nothing in between


def test_a_file_stamped_in_the_future_settles_by_the_sensors_own_looks(
    tmp_path: Path, watched: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file server whose clock runs ahead stamps mtimes in the future: unchanged looks, a settle time apart, count."""
    monkeypatch.setenv(SETTLE_ENV, "0.2")
    watcher = Watcher(tmp_path)
    _drop(watched, b"one")
    for path in watched.iterdir():
        _age(path, -3600)  # an hour ahead
    first = watcher.look()
    assert _events(first) == [] and "still being written" in first.skip_reason.skip_message
    time.sleep(0.3)
    (settled,) = _events(watcher.look())
    assert settled.tags[DATA_VERSION_TAG] != "absent"


def _ingest(data_dir: Path, source_dir: Path) -> None:
    dg.materialize(
        [mnist_raw],
        resources=default_resources(str(data_dir)),
        run_config=dg.RunConfig(
            {"mnist_raw": {"config": {"source_dir": str(source_dir), "verify_md5": False, "allow_download": False}}}
        ),
    )


def test_the_ingest_says_wait_for_a_truncated_file_still_being_written(tmp_path: Path) -> None:
    folder = write_idx_set(tmp_path / "drop", tiny_arrays())
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-50])  # half copied, written to just now
    being_written = r"train-images-idx3-ubyte\.gz is still being written .*wait until the copy finishes"
    with pytest.raises(DataError, match=being_written):
        _ingest(tmp_path / "data", folder)
    _age(path)  # left cut short for longer than the settle time: broken, not being copied
    cut_short = r"train-images-idx3-ubyte\.gz is a truncated or corrupt gzip .*fetch it again"
    with pytest.raises(DataError, match=cut_short) as broken:
        _ingest(tmp_path / "data", folder)
    assert "still being written" not in str(broken.value)
