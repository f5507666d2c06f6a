"""The package's shape: no import circle, core free of Dagster and MLflow, core's rooms layered one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vae_pipeline"
# core's sub-packages from the bottom up: each may import those before it, never one after it.
CORE_LAYERS = ("data", "model", "evaluation", "selection")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that `path` imports, at any depth (a deferred import inside a function counts too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
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


def _third_party(path: Path) -> set[str]:
    tops: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            tops.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            tops.add(node.module.split(".")[0])
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
    assert not _third_party(path) & {"dagster", "dagster_celery", "dagster_postgres", "mlflow"}


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


def test_every_module_says_what_it_is_for() -> None:
    missing = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if p.name != "__init__.py" or p.read_text().strip()
               if ast.get_docstring(ast.parse(p.read_text())) is None]
    assert not missing, f"modules without a docstring: {missing}"
