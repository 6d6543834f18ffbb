"""A foreign producer writes poison straight to the events topic of a running stack: the
aggregator keeps counting the valid events around it, exactly, and keeps the poison."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest
import sqlalchemy as sa
from kafka import KafkaProducer

from shared.db import create_engine
from shared.events import EVENTS_TOPIC
from shared.tables import dead_letters
from tests.databases import migrated
from tests.integration.test_poison import FUNNEL, _oracle
from tests.poison import odd_but_valid, poison_records, valid_event
from tests.stack import Stack, eventually, report_persons

RANGE = {"from": "2026-01-01", "to": "2026-02-01"}


async def _letters(url: str) -> dict[int, str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.select(dead_letters.c.offset, dead_letters.c.reason))
            return {int(offset): str(reason) for offset, reason in rows.all()}
    finally:
        await engine.dispose()


def _post(ingest, values: list[bytes]) -> None:
    batch = []
    for raw in values:
        doc = orjson.loads(raw)
        batch.append(
            {
                "event_id": doc["event_id"],
                "user_id": doc["person_id"],
                "event": doc["event"],
                "timestamp": doc["timestamp"],
                "properties": doc["properties"],
                "context": doc["context"],
            }
        )
    answer = ingest.post("/v1/events", json={"batch": batch})
    assert answer.status_code == 202, answer.text
    assert not answer.json()["rejected"], answer.text


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_foreign_producers_poison_never_stops_the_aggregator(kind, tmp_path):
    rng = random.Random(8)
    project = "e2e"
    valid = [
        valid_event(f"person-{p}", rng.choice("abc"), n, project, rng.choice(["ads", "seo"]))
        for p in range(60)
        for n in range(rng.randrange(1, 5))
    ]
    poison = poison_records(project)
    with migrated(kind, tmp_path) as url:
        stack = Stack(tmp_path, url, partitions=1).start()
        try:
            with stack.api() as api, stack.ingest() as ingest:
                funnel_id = api.post("/v1/funnels", json=FUNNEL).json()["id"]
                producer = KafkaProducer(bootstrap_servers=stack.broker.bootstrap, acks="all")
                half = len(valid) // 2
                _post(ingest, valid[:half])
                for _, value, _ in poison:  # between the valid events, on the same partition
                    producer.send(EVENTS_TOPIC, key=b"foreign", value=value)
                producer.flush()
                producer.close()
                _post(ingest, valid[half:] + odd_but_valid(project))
                counted = valid + odd_but_valid(project)
                expected = _oracle(counted).persons
                eventually(
                    lambda: report_persons(api, funnel_id, **RANGE),
                    lambda c: c == expected,
                    timeout_s=90,
                    what="persons per step",
                )
            letters = asyncio.run(_letters(url))
            assert sorted(letters) == list(range(half, half + len(poison)))
            for offset, (what, _, reason) in zip(sorted(letters), poison, strict=True):
                assert reason in letters[offset], what
            assert len(stack.aggregators) == 1
            assert stack.aggregators[0].poll() is None, "the aggregator must still run"
        except AssertionError:
            print(stack.logs())  # noqa: T201 - the processes' logs explain a failure
            raise
        finally:
            stack.stop()
