"""Aggregator throughput: Kafka -> committed state, vs raw kafka-python consumption.

3 funnels of 5 steps, 100,000 persons, on PostgreSQL (one aggregator process, then two sharing
the partitions as one consumer group) and on SQLite; the raw consumer reads the same topic from
the same broker in the same run (the ceiling). Resident memory of the
aggregator is sampled while persons grow from 100,000 to 1,000,000 (PostgreSQL).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from kafka import KafkaConsumer, KafkaProducer

from bench.common import record, rss_mb
from services.api.repository import funnels as api_funnels
from services.devstack import EmbeddedBroker, create_topics, free_port, spawn, stop_process
from shared.clock import now_us
from shared.db import create_engine, sessionmaker
from shared.events import EVENTS_TOPIC
from shared.tables import consumer_offsets
from tests.databases import migrated
from tests.helpers import create_key
from tests.workload import NAMES, wire
from tests.workload import events as workload

FUNNELS = [[NAMES[(i + k) % len(NAMES)] for k in range(5)] for i in range(3)]


def produce(bootstrap: str, first_person: int, persons: int, per_person: int) -> int:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, batch_size=65_536
    )
    sent = 0
    for start in range(first_person, first_person + persons, 10_000):
        chunk = workload(
            "bench", min(10_000, first_person + persons - start), per_person, seed=start
        )
        for key, value, headers in wire(_renumber(chunk, start)):
            producer.send(EVENTS_TOPIC, key=key, value=value, headers=headers)
            sent += 1
    producer.flush()
    producer.close()
    return sent


def _renumber(chunk: list, offset: int) -> list:
    from dataclasses import replace

    return [
        replace(
            e,
            person_id=f"p{offset + int(e.person_id.split('-')[1]):07d}",
            user_id=None,
            event_id=f"{offset}-{e.event_id}",
        )
        for e in chunk
    ]


def raw_consume_rate(bootstrap: str, total: int) -> float:
    consumer = KafkaConsumer(
        EVENTS_TOPIC,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{time.time_ns()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=2000,
    )
    seen, started = 0, None
    while seen < total:
        for batch in consumer.poll(timeout_ms=500).values():
            started = started or time.perf_counter()
            seen += len(batch)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return seen / elapsed


async def _prepare(url: str) -> None:
    engine = create_engine(url)
    async with sessionmaker(engine).begin() as session:
        await create_key(session, "bench", "admin")
        for i, steps in enumerate(FUNNELS):
            doc = {
                "name": f"f{i}",
                "steps": [{"event": s, "where": []} for s in steps],
                "window_seconds": 86_400,
                "order": "ordered",
                "exclusions": [],
                "breakdowns": ["channel"],
                "value_property": "amount",
            }
            await api_funnels.create_funnel(session, "bench", doc, now_us=now_us())
    await engine.dispose()


async def _applied(url: str) -> int:
    """Records applied: the committed next offsets, written in each batch's transaction
    (a count of the events table cost the database a scan every half second)."""
    engine = create_engine(url)
    async with engine.connect() as conn:
        n = await conn.scalar(sa.select(sa.func.sum(consumer_offsets.c.next_offset)))
    await engine.dispose()
    return int(n or 0)


def follow(url: str, pids: list[int], target: int) -> tuple[float, float]:
    """Wait until ``target`` records are applied; return (events/s while applying, peak RSS MB
    of the largest aggregator process)."""
    first: tuple[float, int] | None = None
    peak = 0.0
    while True:
        n = asyncio.run(_applied(url))
        now = time.perf_counter()
        peak = max(peak, *(rss_mb(pid) for pid in pids))
        if n and first is None:
            first = (now, n)
        if n >= target:
            assert first is not None
            return (n - first[1]) / max(now - first[0], 1e-9), peak
        time.sleep(0.5)


def run_database(
    kind: str, broker: EmbeddedBroker, total: int, grow: int, processes: int = 1
) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix=f"bench-agg-{kind}-"))
    with migrated(kind, folder) as url:
        asyncio.run(_prepare(url))
        env = {
            "DATABASE_URL": url,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "AGGREGATOR_GROUP_ID": f"bench-{kind}-{time.time_ns()}",
        }
        started = [
            spawn(
                ["aggregator"],
                env | {"AGGREGATOR_METRICS_PORT": str(free_port())},
                folder / f"aggregator-{i}.log",
            )
            for i in range(processes)
        ]
        pids = [p.pid for p in started]
        try:
            rate, rss_100k = follow(url, pids, total)
            figures = {
                f"{kind}: events/s applied": rate,
                f"{kind}: peak RSS at 100k persons, MB": rss_100k,
            }
            if grow:
                produce(broker.bootstrap, 100_000, grow, 1)
                _, rss_grown = follow(url, pids, total + grow)
                figures[f"{kind}: peak RSS at {100_000 + grow:,} persons, MB"] = rss_grown
            return figures
        finally:
            for p in started:
                stop_process(p)


def main(quick: bool = False) -> None:
    persons, per_person = (20_000, 5) if quick else (100_000, 3)
    broker = EmbeddedBroker().start()
    try:
        create_topics(broker.bootstrap, 8)
        total = produce(broker.bootstrap, 0, persons, per_person)
        ceiling = raw_consume_rate(broker.bootstrap, total)
        figures: dict[str, float] = {"events": total, "raw kafka-python consume, events/s": ceiling}
        figures |= run_database("postgresql", broker, total, grow=0 if quick else 900_000)
        two = run_database("postgresql", broker, total, grow=0, processes=2)
        figures["postgresql, 2 aggregator processes: events/s applied"] = two[
            "postgresql: events/s applied"
        ]
        figures |= run_database("sqlite", broker, total, grow=0)
        for kind in ("postgresql", "postgresql, 2 aggregator processes", "sqlite"):
            figures[f"{kind}: ratio to raw consume (target >= 0.30)"] = (
                figures[f"{kind}: events/s applied"] / ceiling
            )
    finally:
        broker.stop()
    record("aggregator (3 funnels x 5 steps)", figures)
