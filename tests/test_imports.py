"""The edge imports one way: no cycle through it, imports inside functions included.

And the daemon never imports HTTP code: ``driftmon.cli`` wires the two.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "driftmon"


def import_graph() -> dict[str, set[str]]:
    """Module → the driftmon modules it imports anywhere in its text."""
    modules: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for other in graph[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return seen


EDGE = ("driftmon.cli", "driftmon.daemon", "driftmon.ingest", "driftmon.parsers", "driftmon.http",
        "driftmon.sources", "driftmon.columnar")


def test_no_import_cycle_through_the_edge() -> None:
    """No cycle holds a module between the socket and the engine."""
    through_edge = [
        component
        for component in cycles(import_graph())
        if any(module.startswith(EDGE) for module in component)
    ]
    assert through_edge == []


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_daemon_and_the_ingest_gate_import_no_http_code() -> None:
    graph = import_graph()
    for module in ("driftmon.daemon", "driftmon.ingest", "driftmon.sources"):
        assert not {m for m in reachable(graph, module) if m.startswith("driftmon.http")}
    assert "driftmon.http.app" in reachable(graph, "driftmon.cli")
