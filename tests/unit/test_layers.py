"""The package layout keeps data flowing one way: a leaf model package and no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "pilot"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """pilot module -> the pilot modules it imports (at any level, including inside functions)."""
    graph: dict[str, set[str]] = {}
    modules = {_module_name(p) for p in ROOT.rglob("*.py") if "api" not in p.relative_to(ROOT).parts[:1]}
    for path in ROOT.rglob("*.py"):
        name = _module_name(path)
        if name not in modules:
            continue
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target != "pilot":
                    found.add(target)
        graph[name] = found
    return graph


def test_model_is_a_leaf_package() -> None:
    for module, deps in _imports().items():
        if module.startswith("pilot.model"):
            outside = {d for d in deps if not d.startswith("pilot.model")}
            assert not outside, f"{module} imports {sorted(outside)}"


def test_no_import_cycles() -> None:
    graph = _imports()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
