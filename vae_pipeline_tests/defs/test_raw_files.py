"""The raw-files sensor: an event exactly when the watched folder's md5s change, nothing otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from vae_pipeline.core.idx import RAW_FILES
from vae_pipeline.defs.raw_files import DATA_VERSION_TAG, RAW_FILES_ASSET, observe_raw_files
from vae_pipeline.defs.resources import PipelineStorage


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


def _drop(folder: Path, content: bytes) -> None:
    for stem in RAW_FILES.values():
        (folder / f"{stem}.gz").write_bytes(content + stem.encode())


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
