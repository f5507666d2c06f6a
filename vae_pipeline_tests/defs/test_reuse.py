"""Kept results: reused only for the same key and the very files recorded; anything else says why and recomputes."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from vae_pipeline.defs.reuse import StoredResult, result_key
from vae_pipeline.defs.storage.folder import PipelineStorage


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    warning = info


@pytest.fixture
def stored(tmp_path: Path) -> tuple[StoredResult, Path]:
    storage = PipelineStorage(data_dir=str(tmp_path))
    picture = storage.path("evaluation", "v0001", "picture.png")
    picture.write_bytes(b"png bytes")
    result = StoredResult(storage, storage.path("evaluation", "v0001", "result.json"), result_key(config={"k": 1}, run="r1"))
    metadata = {"fd": 12.5, "n": 3, "ok": True, "verdict": "regular", "table": dg.MetadataValue.md("| a |"),
                "schema": dg.TableSchema(columns=[dg.TableColumn("mu", "list<float>")])}
    result.save({"model_version": 1}, metadata, [picture])
    return result, picture


def test_the_same_key_and_files_are_reused_with_their_metadata(stored) -> None:
    result, _ = stored
    reused = result.load(Log())
    assert reused is not None and reused.manifest == {"model_version": 1}
    assert reused.metadata["fd"] == dg.MetadataValue.float(12.5)
    assert reused.metadata["ok"] == dg.MetadataValue.bool(True)  # not turned into an int
    assert reused.metadata["table"] == dg.MetadataValue.md("| a |")
    assert reused.metadata["schema"].schema.columns[0].name == "mu"


def test_another_key_is_not_reused(stored) -> None:
    result, _ = stored
    log = Log()
    other = StoredResult(result.storage, result.record, result_key(config={"k": 2}, run="r1"))
    assert other.load(log) is None and "other inputs, config or code" in log.lines[0]


def test_a_changed_or_missing_file_is_named_and_not_reused(stored) -> None:
    result, picture = stored
    log = Log()
    picture.write_bytes(b"something else")
    assert result.load(log) is None and f"{picture} changed since it was recorded" in log.lines[0]
    picture.unlink()
    assert result.load(log) is None and f"{picture}, part of the recorded result, is missing" in log.lines[1]


def test_an_unreadable_record_is_recomputed_not_an_error(stored) -> None:
    result, _ = stored
    result.record.write_text("{half")
    log = Log()
    assert result.load(log) is None and "unreadable" in log.lines[0]


def test_metadata_of_an_unknown_type_is_refused_when_saving(stored) -> None:
    result, picture = stored
    with pytest.raises(TypeError, match="'odd' is a list"):
        result.save({}, {"odd": [1, 2]}, [picture])
