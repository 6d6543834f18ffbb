"""Crash safety with real processes: kill -9 aggregators while events flow; counts stay exact."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import defaultdict

import pytest
import sqlalchemy as sa
from kafka import KafkaProducer

from services.aggregator.engine import PersonEvent
from shared.db import create_engine
from shared.events import EVENTS_TOPIC, CanonicalEvent, to_micros
from shared.funnel import definition_from_doc
from shared.tables import consumer_offsets, events
from tests.databases import migrated
from tests.oracle import oracle_report
from tests.stack import Stack, eventually
from tests.workload import events as workload
from tests.workload import wire

FUNNEL = {
    "name": "crash",
    "steps": [{"event": "visit"}, {"event": "signup"}, {"event": "activate"}, {"event": "pay"}],
    "window_seconds": 3 * 3600,
    "exclusions": [{"event": "browse", "from_step": 3, "to_step": 4}],
}
RANGE = {"from": "2026-01-01", "to": "2026-02-01"}


def produce(bootstrap: str, stream: list[CanonicalEvent]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for key, value, headers in wire(stream):
        producer.send(EVENTS_TOPIC, key=key, value=value, headers=headers)
    producer.flush()
    producer.close()


async def progress(url: str) -> tuple[int, int]:
    """(next offsets summed over partitions, events stored)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            offsets = await conn.scalar(sa.select(sa.func.sum(consumer_offsets.c.next_offset)))
            stored = await conn.scalar(sa.select(sa.func.count()).select_from(events))
            return int(offsets or 0), int(stored or 0)
    finally:
        await engine.dispose()


def expected_counts(stream: list[CanonicalEvent], count: str) -> list[int]:
    by_person: dict[str, list[PersonEvent]] = defaultdict(list)
    for e in stream:
        by_person[e.person_id].append(
            PersonEvent(e.event_id, to_micros(e.timestamp), e.event, e.properties)
        )
    f = definition_from_doc(FUNNEL)
    far = 10**18
    return oracle_report(f, by_person, 0, far, far, count).persons


def run_with_kills(stack: Stack, stream: list[CanonicalEvent], kill: callable) -> None:
    with stack.api() as api:
        funnel_id = api.post("/v1/funnels", json=FUNNEL).json()["id"]
        producer = threading.Thread(target=produce, args=(stack.broker.bootstrap, stream))
        producer.start()
        kill()
        producer.join()
        eventually(
            lambda: asyncio.run(progress(stack.database_url)),
            lambda p: p[0] == len(stream),
            timeout_s=240,
            what="offsets of every record committed",
        )
        for count in ("uniques", "totals"):
            body = api.get(
                f"/v1/funnels/{funnel_id}/report", params={**RANGE, "count": count}
            ).json()
            assert [s["persons"] for s in body["steps"]] == expected_counts(stream, count), count
        unique_ids = {e.event_id for e in stream}
        assert asyncio.run(progress(stack.database_url))[1] == len(unique_ids)


def shuffled_with_duplicates(persons: int, per_person: int, seed: int) -> list[CanonicalEvent]:
    rng = random.Random(seed)
    stream = workload("e2e", persons, per_person, seed)
    stream += rng.sample(stream, len(stream) // 50)  # redelivered events, same ids
    rng.shuffle(stream)  # late and out-of-order events
    return stream


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_kill_9_the_aggregator_repeatedly_and_counts_stay_exact(kind, tmp_path):
    stream = shuffled_with_duplicates(persons=6_000, per_person=9, seed=11)
    assert len(stream) >= 50_000
    rng = random.Random(5)
    with migrated(kind, tmp_path) as url:
        stack = Stack(tmp_path, url).start()
        try:

            def kill() -> None:
                for _ in range(6):
                    time.sleep(rng.uniform(1.0, 4.0))
                    victim = stack.aggregators[-1]
                    victim.kill()
                    victim.wait()
                    stack.start_aggregator()

            run_with_kills(stack, stream, kill)
        except AssertionError:
            print(stack.logs())  # noqa: T201 - the processes' logs explain a failure
            raise
        finally:
            stack.stop()


def test_two_aggregators_share_partitions_and_one_takes_over(tmp_path):
    stream = shuffled_with_duplicates(persons=3_000, per_person=9, seed=12)
    with migrated("postgresql", tmp_path) as url:
        stack = Stack(tmp_path, url).start()
        try:
            stack.start_aggregator()

            def kill() -> None:
                time.sleep(3)
                stack.aggregators[0].kill()

            run_with_kills(stack, stream, kill)
            assert stack.aggregators[1].poll() is None, "the survivor must still run"
        except AssertionError:
            print(stack.logs())  # noqa: T201 - the processes' logs explain a failure
            raise
        finally:
            stack.stop()
