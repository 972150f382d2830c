"""The house README's Architecture draws, read from the imports of ``src/uniembed`` (ast: nothing is
imported): floors that import only downwards, no cycles, model families known only to ``models/``
and ``testing/``, feature packages that never import one another."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "uniembed"
FLOORS = {  # README's Architecture, bottom up; a module imports from its floor or those beneath
    "errors": 0,
    "_optional": 0,
    "core": 0,
    "inputs": 1,
    "models": 1,
    "plans": 2,
    "engine": 2,
    "chunking": 2,
    "embedder": 3,
    "loader": 3,
    "retrieval": 4,
    "training": 4,
    "bulk": 4,
    "integrations": 4,
    "bench": 4,
    "server": 5,
    "evaluation": 5,  # measures what retrieval's index returns
    "distributed": 5,
    "cli": 6,
    "": 6,  # the root package, the public facade
}
FEATURES = {room for room, floor in FLOORS.items() if floor == 4}
FAMILIES = ("uniembed.models.jina_v3", "uniembed.models.jina_v4")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(path: Path) -> set[str]:
    """The uniembed modules ``path`` imports anywhere (functions included), except for typing."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    typing_only = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for child in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else base)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imported(path) for name, path in MODULES.items()}


def room(module: str) -> str:
    """``uniembed.retrieval.index`` → ``retrieval``; the root package → ``""``."""
    return module.split(".")[1] if "." in module else ""


def test_every_room_has_a_floor() -> None:
    rooms = {room(module) for module in MODULES} - {"testing"}
    assert rooms == set(FLOORS)


def test_no_module_imports_the_root_facade() -> None:
    offenders = [m for m, deps in GRAPH.items() if m != "uniembed" and "uniembed" in deps]
    assert offenders == []


def test_no_import_cycle_between_files_or_packages() -> None:
    rooms: dict[str, set[str]] = {}
    for module, deps in GRAPH.items():
        rooms.setdefault(room(module), set()).update(
            room(d) for d in deps if room(d) != room(module)
        )
    for graph in (GRAPH, rooms):
        try:
            TopologicalSorter(graph).prepare()
        except CycleError as cycle:
            pytest.fail(f"import cycle: {' -> '.join(cycle.args[1])}")


def runs_upward(module: str, dep: str) -> bool:
    """Whether ``module`` reaches above its floor: ``testing/`` counts as the top floor (only the
    commands may use it), and ``testing/`` itself may use anything."""
    if room(module) == "testing":
        return False
    floor_of_dep = FLOORS["cli"] if room(dep) == "testing" else FLOORS[room(dep)]
    return floor_of_dep > FLOORS[room(module)]


def test_floors_import_only_downwards() -> None:
    upward = [f"{m} -> {d}" for m, deps in GRAPH.items() for d in deps if runs_upward(m, d)]
    assert upward == []


def test_feature_packages_never_import_one_another() -> None:
    crossings = [
        f"{module} -> {dep}"
        for module, deps in GRAPH.items()
        for dep in deps
        if room(module) in FEATURES and room(dep) in FEATURES and room(dep) != room(module)
    ]
    assert crossings == []


def test_only_models_and_testing_know_a_model_family() -> None:
    outside = [
        f"{module} -> {dep}"
        for module, deps in GRAPH.items()
        if room(module) not in ("models", "testing")
        for dep in deps
        if dep.startswith(FAMILIES)
    ]
    assert outside == []


def test_the_checks_see_the_imports() -> None:
    """The rules above would pass on a graph with no edges: the reader must find real ones."""
    assert "uniembed.core.scores" in GRAPH["uniembed.retrieval.scan"]
    assert any(dep.startswith(FAMILIES) for dep in GRAPH["uniembed.models.registry"])
    assert sum(len(deps) for deps in GRAPH.values()) > 300
