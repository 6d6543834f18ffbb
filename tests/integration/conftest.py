from __future__ import annotations

import pytest

from shared.db import create_engine, sessionmaker
from tests.databases import migrated


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    with migrated(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def engine(database_url):
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine):
    return sessionmaker(engine)
