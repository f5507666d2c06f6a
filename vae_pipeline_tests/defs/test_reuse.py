"""Kept results: reused only for the same key, code version and the very files recorded; anything else says why and recomputes."""

from __future__ import annotations

import ast
import gc
import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest

from vae_pipeline.defs import reuse
from vae_pipeline.defs.manifests import PriorSamples
from vae_pipeline.defs.reuse import StoredResult, code_version, parse_python, result_key, source_digest, stored_result
from vae_pipeline.defs.storage.folder import PipelineStorage

SAMPLES = PriorSamples(tensor_path="samples/s.safetensors", grid_png="samples/g.png", interpolations_png="samples/i.png",
                       model_version=1)


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
    result = StoredResult(storage, "prior_samples", storage.path("evaluation", "v0001", "result.json"),
                          result_key(config={"k": 1}, run="r1"))
    metadata = {"fd": 12.5, "n": 3, "ok": True, "verdict": "regular", "table": dg.MetadataValue.md("| a |"),
                "schema": dg.TableSchema(columns=[dg.TableColumn("mu", "list<float>")])}
    result.save(SAMPLES, metadata, [picture])
    return result, picture


def test_the_same_key_and_files_are_reused_with_their_metadata(stored) -> None:
    result, _ = stored
    reused = result.load(Log())
    assert reused is not None and reused.manifest == SAMPLES
    assert reused.metadata["fd"] == dg.MetadataValue.float(12.5)
    assert reused.metadata["ok"] == dg.MetadataValue.bool(True)  # not turned into an int
    assert reused.metadata["table"] == dg.MetadataValue.md("| a |")
    assert reused.metadata["schema"].schema.columns[0].name == "mu"


def test_another_key_is_not_reused(stored) -> None:
    result, _ = stored
    log = Log()
    other = StoredResult(result.storage, result.asset, result.record, result_key(config={"k": 2}, run="r1"))
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
        result.save(SAMPLES, {"odd": [1, 2]}, [picture])


def _step(asset: str, code: str | None) -> SimpleNamespace:
    """What stored_result reads of a step's context: the asset's key and the code version Dagster holds for it."""
    key = dg.AssetKey(asset)
    return SimpleNamespace(asset_key=key, assets_def=SimpleNamespace(code_versions_by_key={key: code}))


def test_a_record_of_another_code_version_is_not_reused(stored) -> None:
    result, picture = stored
    model = SimpleNamespace(model_name="vae-mnist", model_version=1, checkpoint_sha256="c", mlflow_run_id="r",
                            data_version="d", fingerprint="f")
    before = stored_result(_step("prior_samples", "aaaa"), result.storage, model=model, config={"k": 1})
    before.save(SAMPLES, {}, [picture])
    assert before.record == result.storage.path("results", "prior_samples", "vae-mnist", "v0001.json")
    assert stored_result(_step("prior_samples", "aaaa"), result.storage, model=model, config={"k": 1}).load(Log()) is not None
    log = Log()
    after = stored_result(_step("prior_samples", "bbbb"), result.storage, model=model, config={"k": 1})
    assert after.record == before.record and after.load(log) is None and "other inputs, config or code" in log.lines[0]


def test_an_asset_without_a_code_version_cannot_keep_results(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no code_version"):
        stored_result(_step("prior_samples", None), PipelineStorage(data_dir=str(tmp_path)), record="x")


ASSET = "vae_pipeline.defs.assets.outputs"


def test_the_derived_code_version_is_stable_and_changes_with_an_imported_core_module() -> None:
    read: list[str] = []

    def recording(module: str) -> str:
        read.append(module)
        return reuse.read_source(module)

    assert source_digest(ASSET, recording) == source_digest(ASSET)  # nothing changed: the same version
    assert ASSET in read and "vae_pipeline.core.evaluation.plots" in read  # imported by outputs.py
    assert "vae_pipeline.core.data.idx" in read  # imported by core/data/tensor_store.py, which outputs.py does not import
    assert not any(m.startswith("vae_pipeline.defs.") and m != ASSET for m in read)  # adapters are not part of it

    def edited(module: str) -> str:
        text = reuse.read_source(module)
        return text + "\n# an edit\n" if module == "vae_pipeline.core.data.idx" else text

    assert source_digest(ASSET, edited) != source_digest(ASSET)
    # A core module outputs.py does not reach is not part of its version.
    unrelated = "vae_pipeline.core.selection.sweep_comparison"
    assert unrelated not in read
    assert source_digest(ASSET, lambda m: reuse.read_source(m) + ("#" if m == unrelated else "")) == source_digest(ASSET)


def test_deriving_a_code_version_imports_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Reading which core modules a file imports must not import what else it names: finding the spec of
    # `lazy_pkg.sub.thing` would import lazy_pkg.sub, and with it whatever a module defers to a function.
    package = tmp_path / "lazy_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("raise AssertionError('lazy_pkg was imported')\n")
    (package / "sub.py").write_text("thing = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    source = "from lazy_pkg.sub import thing\nimport lazy_pkg\nfrom vae_pipeline.core.model import vae\n"
    assert reuse._core_imports("vae_pipeline.core.evaluation.example", source) == {"vae_pipeline.core.model.vae"}
    assert "lazy_pkg" not in sys.modules


class _LogsATracebackWhenCollected:
    """Garbage that logs an exception with its traceback when the collector frees it, as SQLAlchemy does for a
    connection that another thread left open."""

    def __init__(self) -> None:
        self.cycle = self  # only the cyclic collector frees it, at whatever allocation triggers a collection

    def __del__(self) -> None:
        try:
            _ = {}["closed on the wrong thread"]  # a part of its line: on 3.11 the traceback parses that part for carets
        except KeyError:
            logging.getLogger(__name__).exception("a finalizer failed")


def test_parsing_is_not_broken_by_finalizers_that_log_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    # On CPython 3.11.7 a plain ast.parse here fails with "AST constructor recursion depth mismatch"
    # in the first round; with the collector paused during the parse no finalizer runs inside it.
    source = reuse.read_source(ASSET)
    tree = ast.dump(ast.parse(source))  # before there is any such garbage
    for _ in range(3):
        garbage = [_LogsATracebackWhenCollected() for _ in range(50)]
        del garbage  # pending: the next collection, whenever an allocation triggers it, runs their finalizers
        parsed = parse_python(source)
        gc.collect()  # here, outside the parse
        assert ast.dump(parsed) == tree
    assert len([r for r in caplog.records if r.exc_info]) == 3 * 50
    assert gc.isenabled()


def test_line_endings_do_not_change_the_source_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A checkout with CRLF line endings derives the same version as one with LF.
    (tmp_path / "crlf_module.py").write_bytes(b"x = 1\r\ny = 2\r\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert reuse.read_source("crlf_module") == "x = 1\ny = 2\n"


def test_the_assets_that_keep_results_declare_the_derived_code_version() -> None:
    from vae_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    expected = {
        "latent_embeddings": ASSET, "prior_samples": ASSET, "reconstruction_report": ASSET,
        "latent_evaluation": "vae_pipeline.defs.assets.evaluation",
        "version_comparison": "vae_pipeline.defs.assets.comparison",
        "sweep_comparison": "vae_pipeline.defs.assets.sweep",
    }
    declared = {name: graph.get(dg.AssetKey(name)).code_version for name in expected}
    assert declared == {name: code_version(module) for name, module in expected.items()}
    assert all(len(version) == 16 for version in declared.values())


def test_a_record_whose_manifest_does_not_read_is_recomputed(stored) -> None:
    result, _ = stored
    record = json.loads(result.record.read_text())
    del record["manifest"]["grid_png"]
    result.record.write_text(json.dumps(record))
    log = Log()
    assert result.load(log) is None and "missing fields ['grid_png']" in log.lines[0] and "computing the result again" in log.lines[0]
