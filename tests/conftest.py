"""Markers by folder (tests/unit, tests/integration, tests/e2e) and hypothesis profiles.

The ``dev`` profile (the default) keeps ``make test-unit`` to seconds; CI runs the ``ci``
profile (``HYPOTHESIS_PROFILE=ci``, set by ``.ci/run``), which tries many more examples.
A test that sets ``max_examples`` itself (the database-bound ones) keeps its own count.

PostgreSQL databases are made on a private cluster of each test process (tests/databases.py)
unless ``TEST_PG_PORT`` or ``TEST_PG_HOST`` names a server to use instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from tests import databases

settings.register_profile("dev", max_examples=50)
settings.register_profile("ci", max_examples=1000, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

TIERS = ("unit", "integration", "e2e")


def pytest_configure(config: pytest.Config) -> None:
    if "TEST_PG_PORT" not in os.environ and "TEST_PG_HOST" not in os.environ:
        databases.use_private_server()


def pytest_unconfigure(config: pytest.Config) -> None:
    databases.close_private_server()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
