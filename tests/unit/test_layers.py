"""The house rules of the layout: imports run one way, down the data flow, and never in a circle.

Every ``import`` in every module counts, including imports inside functions and under
``TYPE_CHECKING``: a lazy import is still a dependency. A room's rank says how low it sits; a
module may import only rooms of its own rank or lower, and no chain of imports may come back to
where it started. Regression for the redesign: ``hwstatus`` reached up into ``diagnostics`` and
``provisioning.inventory`` and ``provisioning.device_config`` imported each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Lower ranks are the shared base; each room may import only rooms of the same or lower rank.
RANKS: dict[str, int] = {
    "firmware": 0,  # the package itself: __version__ and the telemetry opt-out
    "firmware.errors": 0,
    "firmware.fsutil": 1,
    "firmware.frames": 1,
    "firmware.boxes": 1,
    "firmware.contract": 1,
    "firmware.config": 2,
    "firmware.media": 3,
    "firmware.device": 3,
    "firmware.models": 4,
    "firmware.sources": 4,
    "firmware.detect": 5,
    "firmware.anonymize": 6,
    "firmware.track": 6,
    "firmware.count": 7,
    "firmware.outbox": 7,
    "firmware.windows": 8,
    "firmware.mqtt": 9,
    "firmware.runtime.pipeline": 9,
    "firmware.runtime.sdnotify": 9,
    "firmware.runtime.health": 10,
    "firmware.preview": 10,
    "firmware.runtime.preflight": 11,  # checks the files a config names: mqtt and preview
    "firmware.diagnostics": 11,
    "firmware.runtime.service": 12,
    "firmware.jobs": 13,
    "provisioning": 14,
    "firmware.cli": 15,
    "firmware.__main__": 16,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _room(module: str) -> str:
    best = max((r for r in RANKS if module == r or module.startswith(r + ".")), key=len)
    return best


MODULES = {
    _module_name(p): p for pkg in ("firmware", "provisioning") for p in (ROOT / pkg).rglob("*.py")
}


def _imports(path: Path) -> set[str]:
    """Modules of ours that ``path`` imports anywhere (resolved to a module that exists)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] in ("firmware", "provisioning") and name in MODULES:
                found.add(name)
                # Importing a.b.c runs a/__init__ and a/b/__init__ too: real edges, and a
                # package that re-exports its submodules can close a circle through them.
                parts = name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return found


def _ancestors(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


# Importing a module always runs its own packages' __init__ first: those edges are not choices.
GRAPH = {m: _imports(p) - _ancestors(m) for m, p in MODULES.items()}


def test_every_module_has_a_room() -> None:
    assert all(_room(m) for m in MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_import(module: str) -> None:
    mine = RANKS[_room(module)]
    upward = sorted(
        f"{dep} (rank {RANKS[_room(dep)]})"
        for dep in GRAPH[module]
        if RANKS[_room(dep)] > mine and not module.startswith(dep + ".")
    )
    assert upward == [], f"{module} (rank {mine}) imports upwards: {upward}"


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for dep in sorted(graph.get(m, ())):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_no_import_cycles() -> None:
    cycles = find_cycles(GRAPH)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checkers_can_fail() -> None:
    """A circle like the old inventory <-> device_config one is found, and the edges the rules
    look at are really read from the sources (the service imports the outbox lazily)."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert "firmware.outbox" in GRAPH["firmware.runtime.service"]
    assert "provisioning.device_config" in GRAPH["provisioning.inventory.checks"]
    # the package edge that would close device_config -> inventory/__init__ -> ... -> itself
    assert "provisioning.inventory" in GRAPH["provisioning.device_config"]
