"""The funnel logic stays pure: no I/O library may be imported by the core modules, and only
the aggregator's repositories speak SQL."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE = [
    "shared/bounds.py",
    "services/aggregator/engine.py",
    "services/aggregator/changes.py",
    "services/aggregator/exclusions.py",
    "services/aggregator/identity.py",
    "services/aggregator/messages.py",
    "services/aggregator/model.py",
    "services/aggregator/paths.py",
    "services/aggregator/person_cache.py",
    "services/aggregator/reevaluate.py",
    "services/api/reports/python.py",
    "shared/conditions.py",
    "shared/funnel.py",
]
PURE_SHARED = {"shared.clock", "shared.events"}  # time units; the event wire contract
AGGREGATOR = ROOT / "services/aggregator"
REPOSITORY = AGGREGATOR / "repository"
FORBIDDEN = {
    "kafka",
    "sqlalchemy",
    "fastapi",
    "httpx",
    "httpcore",
    "asyncpg",
    "aiosqlite",
    "prometheus_client",
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", PURE)
def test_core_module_imports_no_io_library(module):
    assert imported_roots(ROOT / module) & FORBIDDEN == set()


@pytest.mark.parametrize("module", [m for m in PURE if m.startswith("services/aggregator/")])
def test_aggregator_core_module_imports_only_pure_modules_of_ours(module):
    pure = {m.removesuffix(".py").replace("/", ".") for m in PURE} | PURE_SHARED
    ours = {m for m in imported_modules(ROOT / module) if m.split(".")[0] in ("services", "shared")}
    assert ours - pure == set()


def test_only_the_repositories_import_sqlalchemy_in_the_aggregator():
    importers = {
        path.relative_to(ROOT).as_posix()
        for path in AGGREGATOR.rglob("*.py")
        if "sqlalchemy" in imported_roots(path)
    }
    assert importers
    assert {p for p in importers if not (ROOT / p).is_relative_to(REPOSITORY)} == set()


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found
