"""A PostgreSQL server of the tests' own, stopped and started again: what fails while it is
down is retried later, never taken for bad data; ingest keeps the write keys it knows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from services.aggregator.processor import Processor
from services.ingest.app import create_app
from services.ingest.keys import DatabaseKeyStore, KeysUnavailable
from services.ingest.publisher import Record
from services.ingest.settings import IngestSettings
from shared.db import create_engine, is_unavailable, migrate, sessionmaker
from shared.events import EVENTS_TOPIC
from shared.keys import hash_key
from shared.tables import api_keys, dead_letters, events
from tests.helpers import canonical, create_key, records
from tests.private_postgres import PrivateCluster, private_cluster

T0 = 1_767_225_600


@pytest.fixture(scope="module")
def cluster():
    with private_cluster() as running:
        yield running


@pytest.fixture
def database(cluster: PrivateCluster):
    url = cluster.create_database(f"outage_{time.monotonic_ns()}")
    migrate(url)
    yield url
    if not cluster.running():
        cluster.start()


async def _new_key(url: str, scope: str = "write") -> str:
    engine = create_engine(url)
    try:
        async with sessionmaker(engine).begin() as session:
            return await create_key(session, "proj", scope)  # type: ignore[arg-type]
    finally:
        await engine.dispose()


async def test_a_batch_that_fails_while_the_database_is_down_is_retried_not_dead_lettered(
    cluster, database
):
    engine = create_engine(database)
    sessions = sessionmaker(engine)
    processor = Processor(sessions, "g", horizon_us=lambda: 0)
    try:
        batch = records([canonical(f"p{i}", "a", T0 + i) for i in range(10)])
        assert await processor.apply(batch[:4], {}) == {(EVENTS_TOPIC, 0): 4}
        cluster.stop()
        failed: Exception | None = None
        try:
            await processor.apply(batch[4:], {(EVENTS_TOPIC, 0): 4})
        except Exception as exc:  # whichever the driver raises: judged below
            failed = exc
        assert failed is not None
        assert is_unavailable(failed), repr(failed)
        cluster.start()
        assert await processor.apply(batch[4:], {(EVENTS_TOPIC, 0): 4}) == {(EVENTS_TOPIC, 0): 10}
        async with sessions() as session:
            assert await session.scalar(select(func.count()).select_from(events)) == 10
            assert await session.scalar(select(func.count()).select_from(dead_letters)) == 0
    finally:
        await engine.dispose()


async def test_known_write_keys_outlive_their_cache_time_while_the_database_is_down(
    cluster, database
):
    known, revoked = await _new_key(database), await _new_key(database)
    engine = create_engine(database)
    try:
        async with sessionmaker(engine).begin() as session:
            await session.execute(
                update(api_keys)
                .where(api_keys.c.key_hash == hash_key(revoked))
                .values(revoked_at_us=1)
            )
        store = DatabaseKeyStore(sessionmaker(engine), cache_s=0.1)
        assert await store.project_for(known) == "proj"
        assert await store.project_for(revoked) is None
        cluster.stop()
        await asyncio.sleep(0.3)  # both cached answers are past their time
        assert await store.project_for(known) == "proj"
        assert await store.project_for(known) == "proj"
        assert await store.project_for(revoked) is None
        with pytest.raises(KeysUnavailable):
            await store.project_for("wk_never_seen")
        cluster.start()
        async with sessionmaker(engine).begin() as session:
            await session.execute(
                update(api_keys)
                .where(api_keys.c.key_hash == hash_key(known))
                .values(revoked_at_us=2)
            )
        await asyncio.sleep(0.3)
        assert await store.project_for(known) is None  # asked again once it answers
        assert await store.project_for("wk_never_seen") is None
    finally:
        await engine.dispose()


class _Publisher:
    def __init__(self) -> None:
        self.records: list[Record] = []

    async def publish(self, found: Sequence[Record]) -> None:
        self.records.extend(found)

    async def close(self) -> None:
        pass


def test_ingest_accepts_known_keys_and_answers_503_for_others_while_the_database_is_down(
    cluster, database
):
    known = asyncio.run(_new_key(database))
    settings = IngestSettings(database_url=database, key_cache_s=0.1, rate_limit_per_key=0)
    publisher = _Publisher()
    event = {"user_id": "u", "event": "visit"}
    with TestClient(create_app(settings, publisher=publisher)) as client:
        assert client.post("/v1/events", json=event, auth=(known, "")).status_code == 202
        cluster.stop()
        time.sleep(0.3)
        assert client.post("/v1/events", json=event, auth=(known, "")).status_code == 202
        refused = client.post("/v1/events", json=event, auth=("wk_unknown", ""))
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "5"
        cluster.start()
        assert client.post("/v1/events", json=event, auth=("wk_unknown", "")).status_code == 401
        assert client.post("/v1/events", json=event, auth=(known, "")).status_code == 202
    assert len([r for r in publisher.records if r.topic == EVENTS_TOPIC]) == 3
