"""The query API's layout: SQL only in its repositories, which never commit and never read the
clock, and route modules that do not lean on each other."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.unit.test_purity import imported_roots

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "services/api"
REPOSITORIES = [API / "repository", ROOT / "shared/repository"]
# Maps the database's exceptions (unreachable: 503) to answers.
SQLALCHEMY_ALLOWED = {"services/api/errors.py"}


def _modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _repository_modules() -> list[Path]:
    return [p for folder in REPOSITORIES for p in folder.glob("*.py")]


def test_only_the_repositories_import_sqlalchemy_in_the_api():
    importers = {
        path.relative_to(ROOT).as_posix()
        for path in API.rglob("*.py")
        if "sqlalchemy" in imported_roots(path)
    }
    outside = {p for p in importers if not (ROOT / p).is_relative_to(API / "repository")}
    assert importers
    assert outside == SQLALCHEMY_ALLOWED


def test_repositories_never_commit_nor_read_the_clock():
    for path in _repository_modules():
        text = path.read_text()
        assert ".commit(" not in text, path
        assert "now_us()" not in text, path
        assert {"time", "datetime"} & imported_roots(path) == set(), path
        assert "shared.clock" not in _modules(path), path


def test_no_route_module_imports_another():
    for path in (API / "routes").glob("*.py"):
        if path.name != "__init__.py":
            routes = {m for m in _modules(path) if m.startswith("services.api.routes")}
            assert routes == set(), path
