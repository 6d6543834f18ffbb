"""The funnel logic stays pure: no I/O library may be imported by the core modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE = ["services/aggregator/engine.py", "services/api/reports/python.py", "shared/funnel.py"]
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
