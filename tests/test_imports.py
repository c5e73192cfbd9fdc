"""driftmon imports one way: no cycle among its modules, imports inside functions included.

Importing a submodule runs its package's ``__init__`` first, so an import of
``driftmon.config.model`` from outside ``driftmon.config`` counts as an import
of the package too. And the daemon never imports HTTP code: ``driftmon.cli``
wires the two.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import child_environment

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
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
                    graph[name].update(_packages_entered(name, target, modules))
    return graph


def _packages_entered(importer: str, target: str, modules: dict[str, Path]) -> set[str]:
    """The packages whose ``__init__`` importing ``target`` runs, seen from ``importer``.

    The root package is left out (every module is inside it), and so is any
    package ``importer`` itself belongs to (it is already being imported).
    """
    parts = target.split(".")
    entered = set()
    for depth in range(2, len(parts)):
        package = ".".join(parts[:depth])
        if package in modules and not (importer + ".").startswith(package + "."):
            entered.add(package)
    return entered


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
        "driftmon.sources")


def test_no_import_cycle_through_the_edge() -> None:
    """No cycle holds a module between the socket and the engine."""
    through_edge = [
        component
        for component in cycles(import_graph())
        if any(module.startswith(EDGE) for module in component)
    ]
    assert through_edge == []


def test_no_import_cycle_anywhere() -> None:
    """Not only at the edge: binning, quantiles, config and reference import one way too."""
    assert cycles(import_graph()) == []


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    """What the static graph cannot see: a module imported first must not meet a
    partly initialised one on the way (the failure a package ``__init__`` cycle gives)."""
    names = sorted(import_graph())
    env = child_environment()

    def import_first(name: str) -> tuple[str, str] | None:
        result = subprocess.run(
            [sys.executable, "-c", f"import {name}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        if result.returncode == 0:
            return None
        return name, (result.stderr.strip().splitlines() or ["(no output)"])[-1]

    with ThreadPoolExecutor(max_workers=4) as pool:
        failed = [failure for failure in pool.map(import_first, names) if failure]
    assert failed == []


def test_a_package_init_counts_as_imported() -> None:
    modules = {name: Path() for name in ("driftmon", "driftmon.config", "driftmon.config.model",
                                         "driftmon.infer")}
    assert _packages_entered("driftmon.infer", "driftmon.config.model", modules) == {
        "driftmon.config"
    }
    assert _packages_entered("driftmon.config.load", "driftmon.config.model", modules) == set()


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_daemon_and_the_ingest_gate_import_no_http_code() -> None:
    graph = import_graph()
    for module in ("driftmon.daemon", "driftmon.ingest", "driftmon.sources"):
        assert not {m for m in reachable(graph, module) if m.startswith("driftmon.http")}
    assert "driftmon.http.app" in reachable(graph, "driftmon.cli")
