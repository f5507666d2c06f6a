"""Results kept beside their files, so that re-materializing an asset whose inputs did not change costs nothing.

Evaluation steps are deterministic given their inputs (seeded), so a result is identified by a key
over everything it depends on: the asset's code version, its config, and the identities of what it
read (checkpoint hashes, MLflow run ids, data versions, the judge). A record holds the key, the
manifest, the Dagster metadata (serialized with Dagster's own serdes) and the sha256 of every file
the result consists of. It is reused only when the key matches and every file is still the one
recorded; otherwise the log says which is missing or changed and the step runs again. Records are
written last and atomically, so a crash mid-step leaves no record and the next run recomputes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from vae_pipeline.core.model.checkpoint import file_sha256
from vae_pipeline.defs.storage.folder import PipelineStorage, write_json_atomic

RECORD_FORMAT = 1


def result_key(**parts: Any) -> str:
    """A stable hash of everything a result depends on (JSON-serializable parts)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Reused:
    manifest: dict[str, Any]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class StoredResult:
    """Where one asset's result for one model version is recorded, and under which key."""

    storage: PipelineStorage
    record: Path
    key: str

    def load(self, log: Any) -> Reused | None:
        """The recorded result when its key and files match, else None (and the log says why when it existed)."""
        self.storage.fetch(self.storage.relative(self.record))
        try:
            stored = json.loads(self.record.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning(f"{self.record} is unreadable; computing the result again")
            return None
        if stored.get("format") != RECORD_FORMAT or stored.get("key") != self.key:
            log.info(f"{self.record} holds a result for other inputs, config or code; computing it again")
            return None
        for name, digest in stored["files"].items():
            path = self.storage.resolve(name)
            if not path.is_file():
                log.warning(f"{path}, part of the recorded result, is missing; computing the result again")
                return None
            if file_sha256(path) != digest:
                log.warning(f"{path} changed since it was recorded (sha256 differs); computing the result again")
                return None
        self.storage.publish(self.record)  # a record whose publication was cut short (nothing to do otherwise)
        return Reused(manifest=stored["manifest"], metadata=dg.deserialize_value(stored["metadata"], dict))

    def save(self, manifest: Mapping[str, Any], metadata: Mapping[str, Any], files: list[Path]) -> None:
        """Record a finished result (after its files are written and logged); its files are published first."""
        for path in files:
            self.storage.publish(path)
        write_json_atomic(self.record, {
            "format": RECORD_FORMAT,
            "key": self.key,
            "manifest": dict(manifest),
            "metadata": dg.serialize_value(_normalized(metadata)),
            "files": {self.storage.relative(p): file_sha256(p) for p in files},
        })
        self.storage.publish(self.record)


def _normalized(metadata: Mapping[str, Any]) -> dict[str, dg.MetadataValue]:
    """Metadata as Dagster MetadataValues, ready for serdes (the plain types assets use, converted)."""
    out: dict[str, dg.MetadataValue] = {}
    for key, value in metadata.items():
        if isinstance(value, dg.MetadataValue):
            out[key] = value
        elif isinstance(value, dg.TableSchema):
            out[key] = dg.MetadataValue.table_schema(value)
        elif isinstance(value, bool):  # before int: a bool is an int
            out[key] = dg.MetadataValue.bool(value)
        elif isinstance(value, int):
            out[key] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            out[key] = dg.MetadataValue.float(value)
        elif isinstance(value, str):
            out[key] = dg.MetadataValue.text(value)
        else:
            raise TypeError(f"metadata {key!r} is a {type(value).__name__}; wrap it in a dg.MetadataValue.")
    return out


def stored_result(storage: PipelineStorage, asset: str, model: Mapping[str, Any], **key_parts: Any) -> StoredResult:
    """The record of `asset`'s result for one model version: results/<asset>/<model name>/v<NNNN>.json.

    The key always holds the model's identity (checkpoint hash, MLflow run, data version): files are
    logged to that run, so a model re-logged to another tracking server gets them logged again.
    """
    record = storage.path("results", asset, model["model_name"], f"v{model['model_version']:04d}.json")
    identity = {k: model.get(k) for k in ("checkpoint_sha256", "mlflow_run_id", "data_version", "fingerprint")}
    return StoredResult(storage, record, result_key(asset=asset, model=identity, **key_parts))
