"""The package's shape: no import circle, core free of Dagster and MLflow, core's rooms layered one way, slow imports deferred."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vae_pipeline.defs.reuse import parse_python  # ast.parse, safe from finalizers that parse too

PACKAGE = Path(__file__).resolve().parents[1] / "vae_pipeline"
# core's sub-packages from the bottom up: each may import those before it, never one after it.
CORE_LAYERS = ("data", "model", "evaluation", "selection")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that `path` imports, at any depth (a deferred import inside a function counts too)."""
    found: set[str] = set()
    for node in ast.walk(parse_python(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from vae_pipeline.core.model import losses` imports the module vae_pipeline.core.model.losses.
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    # A package's __init__ is imported on the way to any of its modules; it is not an edge of its own.
    return {name: {m for m in _imports(path, modules) if not paths[m].name == "__init__.py"} for name, path in paths.items()}


def _third_party(source: str, at_load: bool = False) -> set[str]:
    """The top-level packages that `source` imports; with `at_load`, only those imported when the module loads
    (an import inside a function runs when it is called)."""
    tops: set[str] = set()
    pending: list[ast.AST] = [parse_python(source)]
    while pending:
        node = pending.pop()
        if at_load and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            tops.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            tops.add(node.module.split(".")[0])
        pending.extend(ast.iter_child_nodes(node))
    return tops


def test_no_module_of_the_package_imports_itself_back_through_others() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_the_circle_check_finds_a_circle(tmp_path: Path) -> None:
    # The check above must be able to fail: two modules importing each other are found.
    (tmp_path / "a.py").write_text("import vae_pipeline.b\n")
    (tmp_path / "b.py").write_text("def f():\n    from vae_pipeline.a import x\n")
    modules = {"vae_pipeline.a", "vae_pipeline.b"}
    assert _imports(tmp_path / "a.py", modules) == {"vae_pipeline.b"}
    assert _imports(tmp_path / "b.py", modules) == {"vae_pipeline.a"}


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").rglob("*.py")), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_core_imports_neither_dagster_nor_mlflow(path: Path) -> None:
    assert not _third_party(path.read_text()) & {"dagster", "dagster_celery", "dagster_postgres", "mlflow"}


def test_core_rooms_import_only_downwards() -> None:
    graph = _graph()
    upward = []
    for module, targets in graph.items():
        parts = module.split(".")
        if parts[:2] != ["vae_pipeline", "core"] or len(parts) < 4:
            if parts[:2] == ["vae_pipeline", "core"]:  # core's shared basics (atomic, streams, stopwatch) import no room
                upward += [(module, t) for t in targets if t.split(".")[2:3] and t.split(".")[2] in CORE_LAYERS]
            continue
        level = CORE_LAYERS.index(parts[2])
        for target in targets:
            tparts = target.split(".")
            if tparts[:2] == ["vae_pipeline", "core"] and len(tparts) >= 4 and CORE_LAYERS.index(tparts[2]) > level:
                upward.append((module, target))
            if tparts[:2] == ["vae_pipeline", "defs"] or tparts[1:2] in (["definitions"], ["serving"]):
                upward.append((module, target))
    assert not upward, "core imports upwards: " + ", ".join(f"{a} -> {b}" for a, b in upward)


# Imported only inside the functions that use them: every process that loads the definitions (a code server,
# each run worker, `dg`) would otherwise pay for them, about 3 s together on two cores.
LOADED_WHEN_USED = {"sklearn", "openTSNE", "scipy"}


def test_scikit_learn_opentsne_and_scipy_are_imported_where_they_are_used() -> None:
    loaded = {p.relative_to(PACKAGE).as_posix(): found for p in PACKAGE.rglob("*.py")
              if (found := _third_party(p.read_text(), at_load=True) & LOADED_WHEN_USED)}
    assert not loaded, f"imported when the module loads (move the import into the function that uses it): {loaded}"


def test_the_load_time_import_check_tells_module_level_from_function_level() -> None:
    source = "import numpy\nif True:\n    from scipy import stats\nclass A:\n    import sklearn\ndef f():\n    import openTSNE\n"
    assert _third_party(source, at_load=True) == {"numpy", "scipy", "sklearn"}


def test_every_module_says_what_it_is_for() -> None:
    missing = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if p.name != "__init__.py" or p.read_text().strip()
               if ast.get_docstring(parse_python(p.read_text())) is None]
    assert not missing, f"modules without a docstring: {missing}"


def _manifest_fields() -> set[str]:
    """Every field name of the manifest types (defs/manifests.py), read from its source."""
    tree = parse_python((PACKAGE / "defs" / "manifests.py").read_text())
    return {node.target.id for cls in tree.body if isinstance(cls, ast.ClassDef) for node in cls.body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}


NOT_A_MANIFEST = "# not a manifest"  # marks a line that indexes something else by a name a manifest field shares
MLFLOW_MAPS = {"tags", "params"}  # run.data.tags, version.tags, run.data.params: MLflow's string maps, never a manifest


def _manifest_keys(source: str, fields: set[str]) -> list[tuple[int, str]]:
    """(line, key) of each manifest field name read as a string key: x["key"] (not an assignment) or x.get("key")."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(parse_python(source)):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            key, receiver = node.slice, node.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args):
            key, receiver = node.args[0], node.func.value
        else:
            continue
        name = receiver.id if isinstance(receiver, ast.Name) else receiver.attr if isinstance(receiver, ast.Attribute) else None
        if (isinstance(key, ast.Constant) and key.value in fields and name not in MLFLOW_MAPS
                and NOT_A_MANIFEST not in lines[node.lineno - 1]):
            found.append((node.lineno, key.value))
    return found


def test_manifests_are_read_by_attribute_outside_manifests_py() -> None:
    # core cannot see a manifest (it imports no defs: test_core_rooms_import_only_downwards); the rest reads attributes.
    fields = _manifest_fields()
    found = [f"{path.relative_to(PACKAGE)}:{line} [{key!r}]"
             for path in sorted(PACKAGE.rglob("*.py")) if "core" not in path.relative_to(PACKAGE).parts[:1]
             and path != PACKAGE / "defs" / "manifests.py"
             for line, key in _manifest_keys(path.read_text(), fields)]
    assert not found, "manifest fields read as string keys (use the manifest's attribute): " + ", ".join(found)


def test_the_manifest_key_check_finds_string_keys() -> None:
    # The check above must be able to fail: the reads of the release before typed manifests are found, an
    # assignment of Dagster metadata and a marked line are not.
    fields = _manifest_fields()
    assert {"model_version", "fingerprint", "checkpoint_sha256", "mlflow_run_id"} <= fields
    old = (
        "def f(vae_model, mnist_tensors, metadata, tags):\n"
        "    name, version = vae_model['model_name'], vae_model['model_version']\n"
        "    sha = vae_model.get('checkpoint_sha256')\n"
        "    metadata['model_version'] = version\n"
        "    run.data.tags.get('fingerprint')\n"
        f"    return rows['data_version']  {NOT_A_MANIFEST}: a DataFrame's column\n"
    )
    assert sorted(_manifest_keys(old, fields)) == [(2, "model_name"), (2, "model_version"), (3, "checkpoint_sha256")]
