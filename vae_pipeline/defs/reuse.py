"""Results kept beside their files, so that re-materializing an asset whose inputs did not change costs nothing.

Evaluation steps are deterministic given their inputs (seeded), so a result is identified by a key
over everything it depends on: the asset's code version, its config, and the identities of what it
read (checkpoint hashes, MLflow run ids, data versions, the judge). A record holds the key, the
manifest (written with defs/manifests.py), the Dagster metadata (serialized with Dagster's own
serdes) and the sha256 of every file the result consists of. It is reused only when the key matches
and every file is still the one recorded; otherwise the log says which is missing or changed and the
step runs again. Records are written last and atomically, so a crash mid-step leaves no record and
the next run recomputes.

The code version in the key is the asset's Dagster `code_version`, read from the step's context, and
an asset that keeps results derives it with `code_version(__name__)`: a sha256 over the source text
of the asset's module and of every vae_pipeline.core module it imports, transitively. A hand-bumped
version string is forgotten one day, and then a stale result is served as new; a derived one
changes with every edit of the code that computes the result (a comment included: recomputing once
too often is cheap, serving a stale figure is not). It hashes file text (line endings normalized)
under module names, never bytecode or paths, so every process and machine with the same code derives
the same version, and Dagster's "code version changed" in the UI means what it says. defs/ modules
other than the asset's own are not part of it: they wire, name and store, and compute no figure.
"""

from __future__ import annotations

import ast
import functools
import gc
import hashlib
import importlib.util
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from vae_pipeline.core.model.checkpoint import file_sha256
from vae_pipeline.defs.manifests import ManifestError, read_manifest, write_manifest
from vae_pipeline.defs.storage.folder import PipelineStorage, write_json_atomic

RECORD_FORMAT = 2  # 2: manifests written by defs/manifests.py, keyed on the derived code version
CORE = "vae_pipeline.core"


def read_source(module: str) -> str:
    """The source text of `module`, line endings normalized (a checkout with CRLF derives the same version)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"no source for module {module}")
    return Path(spec.origin).read_text(encoding="utf-8").replace("\r\n", "\n")


def parse_python(source: str) -> ast.Module:
    """`ast.parse(source)` with the garbage collector paused while it runs.

    On CPython 3.11 up to at least 3.11.7 (3.12.1 and 3.13.0 are fine, both checked), the converter
    that builds the tree keeps its recursion depth in state shared by the whole interpreter. When a
    collection triggered by its allocations runs a finalizer that parses too (on 3.11, logging a
    traceback does: the caret anchors under each line come from `ast.parse`), the outer parse fails
    with "SystemError: AST constructor recursion depth mismatch" (CPython gh-106905). SQLAlchemy logs
    such a traceback when it finalizes a connection left open by another thread. With no collection
    during the parse, no finalizer runs inside it; they run at the next collection instead.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source)
    finally:
        if was_enabled:
            gc.enable()


def _core_imports(module: str, source: str) -> set[str]:
    """The vae_pipeline.core modules (or packages) that `source` imports, at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(parse_python(source)):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:  # `from . import x` (no module) is not used in core
            base = node.module
            if node.level:  # relative: from the importing module's package, one level up per extra dot
                package = (module if _is_package(module) else module.rpartition(".")[0]).split(".")
                base = ".".join([*package[: len(package) - node.level + 1], node.module])
            if not _within_core(base):  # looked up no further: finding `torch.nn` imports torch, `sklearn.x` sklearn
                continue
            # `from vae_pipeline.core.evaluation import plots` imports the module ...evaluation.plots
            candidates = [f"{base}.{alias.name}" for alias in node.names if _exists(f"{base}.{alias.name}")] or [base]
        else:
            continue
        found.update(name for name in candidates if name == CORE or name.startswith(CORE + "."))
    return {name for name in found if _exists(name)}


def _within_core(module: str) -> bool:
    """Whether `module` is vae_pipeline.core, one of its modules, or a package above it (`from vae_pipeline import core`)."""
    return module == CORE or module.startswith(CORE + ".") or CORE.startswith(module + ".")


@functools.cache
def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _is_package(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.submodule_search_locations is not None


def source_digest(module: str, read: Callable[[str], str] = read_source) -> str:
    """A sha256 over the text of `module` and of every vae_pipeline.core module it imports, transitively."""
    texts: dict[str, str] = {}
    pending = [module]
    while pending:
        name = pending.pop()
        if name in texts:
            continue
        texts[name] = read(name)
        pending.extend(_core_imports(name, texts[name]))
    digest = hashlib.sha256()
    for name in sorted(texts):
        digest.update(f"{name}\n{len(texts[name])}\n{texts[name]}".encode())
    return digest.hexdigest()


@functools.cache
def code_version(module: str) -> str:
    """The code version of the assets in `module` (see the module docstring); computed once per process."""
    return source_digest(module)[:16]


def result_key(**parts: Any) -> str:
    """A stable hash of everything a result depends on (JSON-serializable parts)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Reused:
    manifest: Any  # the asset's manifest type (defs/manifests.py)
    metadata: dict[str, Any]


@dataclass(frozen=True)
class StoredResult:
    """Where one asset's result is recorded, and under which key."""

    storage: PipelineStorage
    asset: str
    record: Path
    key: str

    def materialization(self, log: Any, what: str) -> dg.MaterializeResult | None:
        """The recorded result as this step's materialization (metadata `reused`: True), else None.

        The log says `what` is unchanged and reused, or (from `load`) why the result is computed again.
        """
        if (reused := self.load(log)) is None:
            return None
        log.info(f"{what}; reusing it")
        return dg.MaterializeResult(value=reused.manifest, metadata={**reused.metadata, "reused": True})

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
        for name, digest in stored["files"].items():  # not a manifest: the record, written by save
            path = self.storage.resolve(name)
            if not path.is_file():
                log.warning(f"{path}, part of the recorded result, is missing; computing the result again")
                return None
            if file_sha256(path) != digest:
                log.warning(f"{path} changed since it was recorded (sha256 differs); computing the result again")
                return None
        try:
            manifest = read_manifest(self.asset, stored["manifest"])
        except ManifestError as exc:
            log.warning(f"{self.record}: {exc}; computing the result again")
            return None
        self.storage.publish(self.record)  # a record whose publication was cut short (nothing to do otherwise)
        return Reused(manifest=manifest, metadata=dg.deserialize_value(stored["metadata"], dict))

    def save(self, manifest: Any, metadata: Mapping[str, Any], files: list[Path]) -> None:
        """Record a finished result (after its files are written and logged); its files are published first."""
        for path in files:
            self.storage.publish(path)
        write_json_atomic(self.record, {
            "format": RECORD_FORMAT,
            "key": self.key,
            "manifest": write_manifest(manifest),
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


def stored_result(
    context: dg.AssetExecutionContext, storage: PipelineStorage, *, model: Any = None, record: str | None = None,
    **key_parts: Any,
) -> StoredResult:
    """The kept result of this step's asset: results/<asset>/<record>.json, keyed on its code version and `key_parts`.

    The code version is the one Dagster knows for the asset (derived with `code_version`); an asset
    without one cannot keep results. With `model` (a TrainedModel or RegisteredVersion) the record is
    <model name>/v<NNNN> and the key holds the model's identity (checkpoint hash, MLflow run, data
    version): files are logged to that run, so a model re-logged to another tracking server gets them
    logged again.
    """
    key = context.asset_key
    asset = key.path[-1]
    code = context.assets_def.code_versions_by_key.get(key)
    if code is None:
        raise ValueError(f"{asset} keeps results but has no code_version; declare code_version=code_version(__name__).")
    if model is not None:
        record = record or f"{model.model_name}/v{model.model_version:04d}"
        key_parts["model"] = {"checkpoint_sha256": model.checkpoint_sha256, "mlflow_run_id": model.mlflow_run_id,
                              "data_version": model.data_version, "fingerprint": model.fingerprint}
    if record is None:
        raise ValueError(f"{asset}: name the record of its result (record=...) or the model it belongs to (model=...).")
    path = storage.path("results", asset, *f"{record}.json".split("/"))
    return StoredResult(storage, asset, path, result_key(asset=asset, code=code, **key_parts))
