"""Every model_export module imports, and the imports of model_export and service form no circle
(inside either package or between the two): neither the module-level imports nor all of them,
the lazy ones inside functions included."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("model_export", "service")


def _module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of :data:`PACKAGES`."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(tree: ast.Module, lazy: bool) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported (under ``if``/``try``/``with`` at
    module level too, ``if TYPE_CHECKING`` included); with ``lazy`` also those inside functions
    and classes."""
    if lazy:
        return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, block, []):
                    pending.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])
    return found


def import_graph(files: dict[str, Path], *, lazy: bool = False) -> dict[str, set[str]]:
    """Module -> the modules of ``files`` it imports (at module level unless ``lazy``)."""
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path)), lazy):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name``
                # imports mod.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_cycle_finder_finds_circles() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_in_model_export_and_service() -> None:
    files = _module_files()
    graph = import_graph(files)
    # The graph is read correctly: imports of modules and of names, across the two packages.
    assert "model_export.exporters" in graph["model_export.pipeline"]
    assert "model_export.checkpoints.matching" in graph["model_export.checkpoints.hrnet"]
    assert "service.contract" in graph["model_export.metadata"]
    assert "model_export.pipeline" in graph["model_export.demo"]
    assert find_cycles(graph) == []
    everything = import_graph(files, lazy=True)
    assert "model_export.pipeline" in everything["model_export.cli"]  # a lazy import
    assert find_cycles(everything) == []


def test_every_model_export_module_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    # The python-backend template puts its pydeps directory on sys.path when imported.
    monkeypatch.setattr(sys, "path", list(sys.path))
    names = [n for n in _module_files() if n.startswith("model_export")
             and not n.endswith("__main__")]  # __main__ modules run their CLI
    assert {"model_export.pipeline", "model_export.triton_cpu.model"} <= set(names)
    for name in names:
        importlib.import_module(name)
