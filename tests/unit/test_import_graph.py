"""The package's import graph: no cycles (function-level imports included), and each room imports only downwards."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "rtbook"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> Iterator[str]:
    """Every rtbook module ``path`` imports, at any depth (functions and TYPE_CHECKING blocks too)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in MODULES:
                yield node.module
            for alias in node.names:
                if f"{node.module}.{alias.name}" in MODULES:
                    yield f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name in MODULES)


GRAPH = {name: set(_imports(path)) - {name} for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
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
                found.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def test_the_walker_sees_the_package() -> None:
    assert {"rtbook.registry", "rtbook.checks.kong", "rtbook.config.kong", "rtbook.cli"} <= set(MODULES)
    assert "rtbook.config.kong" in GRAPH["rtbook.checks.kong"]


def test_no_import_cycles() -> None:
    assert _cycles() == []


def test_a_cycle_would_be_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(GRAPH, "rtbook.config.stack", GRAPH["rtbook.config.stack"] | {"rtbook.checks.kong"})
    assert any("rtbook.config.stack" in c and "rtbook.checks.kong" in c for c in _cycles())


# Which rooms a room may import from; a module outside these prefixes is shared ground
# (results, secrets, exceptions, target, crypto, tokens, remedies, registry).
FORBIDDEN = {
    "rtbook.config": ("rtbook.checks", "rtbook.clients", "rtbook.runbook", "rtbook.cli", "rtbook.sandbox",
                      "rtbook.registry", "rtbook.target", "rtbook.seeding"),
    "rtbook.clients": ("rtbook.checks", "rtbook.runbook", "rtbook.cli", "rtbook.sandbox", "rtbook.seeding"),
    "rtbook.checks": ("rtbook.runbook", "rtbook.cli", "rtbook.sandbox"),
    "rtbook.seeding": ("rtbook.runbook", "rtbook.cli", "rtbook.sandbox"),
    "rtbook.lifecycle": ("rtbook.runbook", "rtbook.cli", "rtbook.sandbox"),
    "rtbook.runbook": ("rtbook.cli",),
    "rtbook.sandbox": ("rtbook.checks", "rtbook.clients", "rtbook.config", "rtbook.runbook", "rtbook.cli",
                       "rtbook.registry", "rtbook.seeding", "rtbook.probe"),
    # The probe's logic reads and writes through clients; the checks and the CLI use it, not the reverse.
    "rtbook.probe": ("rtbook.checks", "rtbook.runbook", "rtbook.cli", "rtbook.sandbox", "rtbook.seeding"),
    # Reports render results: they never run a check, a client or the runbook that writes them.
    "rtbook.report": ("rtbook.checks", "rtbook.clients", "rtbook.config", "rtbook.runbook", "rtbook.cli",
                      "rtbook.sandbox", "rtbook.seeding", "rtbook.registry", "rtbook.target"),
    # The load generator measures a target through the clients; nothing below it knows it exists.
    "rtbook.load": ("rtbook.checks", "rtbook.runbook", "rtbook.cli", "rtbook.sandbox"),
    # Plain SQL text shared by rtbook.probe and the sandbox: it imports nothing of rtbook.
    "rtbook.probe_sql": ("rtbook",),
}


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_rooms_import_only_downwards(room: str) -> None:
    bad = [
        f"{m} imports {dep}"
        for m, deps in GRAPH.items()
        if m == room or m.startswith(room + ".")
        for dep in deps
        if any(dep == f or dep.startswith(f + ".") for f in FORBIDDEN[room])
    ]
    assert bad == []
