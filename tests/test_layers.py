"""The layout shows the layers, and this test keeps it so: a pure core, then adapters, the
engine, messaging and the applications, each importing only from below; no import cycle;
small modules; a public surface that is exactly ``sourcery``, ``sourcery.replication``,
``sourcery.testing`` and ``sourcery.examples``."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import types
from pathlib import Path
from typing import TypeVar

import pytest

import sourcery

SRC = Path(sourcery.__file__).resolve().parent

LAYERS = {
    "sourcery._core": 0,
    "sourcery._io": 1,
    "sourcery._stores": 2,
    "sourcery._caches": 2,
    "sourcery._engine": 3,
    "sourcery._messaging": 4,
    "sourcery._readside": 4,
    "sourcery._apps": 5,
    "sourcery.examples": 5,
}
FACADE = 6
"""``sourcery`` itself and its public modules, which re-export from every layer."""

PURE_FORBIDDEN = {
    "asyncio",
    "asyncpg",
    "aio_pika",
    "aiormq",
    "redis",
    "sqlite3",
    "socket",
    "subprocess",
}
MAX_LINES = 500
TYPE_ONLY = {"TYPE_CHECKING", "typing.TYPE_CHECKING"}
"""Conditions whose body never runs; ``if not TYPE_CHECKING:`` and ``else:`` do."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def layer(module: str) -> int:
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return FACADE


def imports(module: str, *, top_level_only: bool) -> set[str]:
    """The modules ``module`` imports: absolute names, ``from x import y`` counted as ``x.y``
    when that is a module. Imports under ``if TYPE_CHECKING:`` never run and are skipped."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) in TYPE_ONLY:
                for branch in child.orelse:  # an ``else:`` runs
                    visit(ast.Module(body=[branch], type_ignores=[]), nested)
                continue
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if top_level_only and inner:
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*up, base] if base else up)
                # Its own package is imported already; the facade ``sourcery`` is not exempt.
                if base == "sourcery" or not module.startswith(base + "."):
                    found.add(base)
                found.update(
                    f"{base}.{a.name}" for a in child.names if f"{base}.{a.name}" in MODULES
                )
            visit(child, inner)

    visit(tree, False)
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_from_its_own_layer_or_below(module: str) -> None:
    mine = layer(module)
    higher = sorted(
        name
        for name in imports(module, top_level_only=False)
        if name.split(".")[0] == "sourcery" and layer(name) > mine
    )
    assert not higher, f"{module} (layer {mine}) imports from above: {higher}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == 0))
def test_the_core_does_no_io(module: str) -> None:
    used = {name.split(".")[0] for name in imports(module, top_level_only=False)}
    assert not used & PURE_FORBIDDEN, f"{module} uses {sorted(used & PURE_FORBIDDEN)}"


def test_no_import_cycle() -> None:
    graph = {
        m: {i for i in imports(m, top_level_only=True) if i in MODULES and i != m} for m in MODULES
    }
    done: set[str] = set()
    path: list[str] = []

    def walk(node: str) -> None:
        if node in path:
            cycle = [*path[path.index(node) :], node]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if node in done:
            return
        path.append(node)
        for nxt in sorted(graph[node]):
            walk(nxt)
        path.pop()
        done.add(node)

    for module in sorted(graph):
        walk(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module: str) -> None:
    lines = MODULES[module].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{module} has {lines} lines; split it by job"


PUBLIC = {"sourcery", "sourcery.replication", "sourcery.testing", "sourcery.examples"}


def test_the_public_modules_are_exactly_the_documented_ones() -> None:
    public = {m for m in MODULES if not any(part.startswith("_") for part in m.split(".")[1:])}
    roots = {m for m in public if not any(m.startswith(p + ".") for p in PUBLIC - {"sourcery"})}
    assert roots == PUBLIC


@pytest.mark.parametrize("name", sorted(PUBLIC - {"sourcery"}))
def test_each_public_module_exports_exactly_its_all(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if exported is None:  # a package of examples: its modules are the surface
        assert isinstance(module, types.ModuleType) and hasattr(module, "__path__")
        assert [m.name for m in pkgutil.iter_modules(module.__path__)]
        return
    for item in exported:
        assert hasattr(module, item), f"{name}.{item} is in __all__ but not defined"
    # What the module defines itself (not what it imports) is public only through __all__.
    defined = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and getattr(v, "__module__", None) == name
        and not isinstance(v, TypeVar)
    }
    assert defined <= set(exported), f"{name} defines but does not export {defined - set(exported)}"
