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
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from kafka import KafkaConsumer, KafkaProducer

from bench.common import record, rss_mb
from services.api.reports.python import Window, funnel_report
from services.api.repository import funnels as api_funnels
from services.api.repository import progress as api_progress
from services.devstack import EmbeddedBroker, create_topics, free_port, spawn, stop_process
from shared.clock import now_us
from shared.db import create_engine, sessionmaker
from shared.events import EVENTS_TOPIC, partition_for
from shared.funnel import US, FunnelDefinition, definition_from_doc
from shared.tables import consumer_offsets
from shared.tables import funnels as funnels_table
from tests.databases import migrated
from tests.helpers import create_key
from tests.oracle import oracle_report
from tests.oracle_identity import from_canonical
from tests.oracle_identity import persons as oracle_persons
from tests.workload import NAMES, merging, wire
from tests.workload import events as workload

FUNNELS = [[NAMES[(i + k) % len(NAMES)] for k in range(5)] for i in range(3)]
FAR_US = 10**10 * US


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


def _doc(i: int, steps: list[str]) -> dict[str, object]:
    return {
        "name": f"f{i}",
        "steps": [{"event": s, "where": []} for s in steps],
        "window_seconds": 86_400,
        "order": "ordered",
        "exclusions": [],
        "breakdowns": ["channel"],
        "value_property": "amount",
    }


async def _prepare(url: str, project: str = "bench") -> None:
    engine = create_engine(url)
    async with sessionmaker(engine).begin() as session:
        await create_key(session, project, "admin")
        for i, steps in enumerate(FUNNELS):
            await api_funnels.create_funnel(session, project, _doc(i, steps), now_us=now_us())
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
    merging_main(quick)


def _identified_chunks(persons: int, per_person: int, share: float) -> Iterator[list]:
    """The stream in chunks of 10,000 persons (each person within one chunk): under user ids,
    with ``share`` of the persons merging (anonymous events, a link, then user-id events)."""
    from dataclasses import replace

    for start in range(0, persons, 10_000):
        chunk = workload("merge", min(10_000, persons - start), per_person, seed=start)
        renamed = [
            replace(
                e,
                person_id=f"u{start}-{e.person_id}",
                user_id=f"u{start}-{e.person_id}",
                event_id=f"{start}-{e.event_id}",
            )
            for e in chunk
        ]
        yield merging(renamed, share, seed=start, partitions=8)


def _oracle_steps(persons: int, per_person: int, share: float) -> list[list[int]]:
    """Per funnel, persons per step as the oracle counts them (chunks hold disjoint persons,
    so their counts add up)."""
    found = [[0] * len(steps) for steps in FUNNELS]
    for chunk in _identified_chunks(persons, per_person, share):
        merged = oracle_persons(from_canonical(e) for e in chunk)
        for i, definition in enumerate(_definitions()):
            counts = oracle_report(definition, merged, 0, FAR_US, FAR_US).persons
            found[i] = [a + b for a, b in zip(found[i], counts, strict=True)]
    return found


def _definitions() -> list[FunnelDefinition]:
    return [definition_from_doc(_doc(i, steps)) for i, steps in enumerate(FUNNELS)]


async def _stored_steps(url: str) -> list[list[int]]:
    """Per funnel, persons per step of the stored entries, through the API's report code."""
    engine = create_engine(url)
    found = []
    try:
        async with sessionmaker(engine)() as session:
            for i, definition in enumerate(_definitions()):
                funnel_id = await session.scalar(
                    sa.select(funnels_table.c.id).where(funnels_table.c.name == f"f{i}")
                )
                entries = await api_progress.entries_in_range(session, funnel_id, 0, FAR_US)
                window = Window(0, FAR_US, FAR_US)
                report = funnel_report(definition, entries, window, "uniques")
                found.append([s.persons for s in report.steps])
    finally:
        await engine.dispose()
    return found


def _merging_run(persons: int, per_person: int, share: float) -> float:
    """events/s applied by one aggregator on PostgreSQL, after checking its counts."""
    broker = EmbeddedBroker().start()
    folder = Path(tempfile.mkdtemp(prefix="bench-merge-"))
    try:
        create_topics(broker.bootstrap, 8)
        producer = KafkaProducer(
            bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5, batch_size=65_536
        )
        total = 0
        for chunk in _identified_chunks(persons, per_person, share):
            for key, value, headers in wire(chunk):
                # As ingest sends: the partition that owns the key's id.
                partition = partition_for(key, range(8))
                producer.send(
                    EVENTS_TOPIC, key=key, value=value, headers=headers, partition=partition
                )
                total += 1
        producer.flush()
        producer.close()
        with migrated("postgresql", folder) as url:
            asyncio.run(_prepare(url, "merge"))
            env = {
                "DATABASE_URL": url,
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "AGGREGATOR_GROUP_ID": f"bench-merge-{time.time_ns()}",
                "AGGREGATOR_METRICS_PORT": str(free_port()),
            }
            process = spawn(["aggregator"], env, folder / "aggregator.log")
            try:
                rate, _ = follow(url, [process.pid], total)
                # Equal answers: a rate only counts when the counts are the oracle's.
                stored = asyncio.run(_stored_steps(url))
                want = _oracle_steps(persons, per_person, share)
                assert stored == want, f"{share:.0%} merging: {stored} != oracle {want}"
                return rate
            finally:
                stop_process(process)
    finally:
        broker.stop()


def merging_main(quick: bool = False, persons: int = 0, rounds: int = 3) -> None:
    """10 % of persons merging vs the same stream without links, in the same run: the two
    alternate ``rounds`` times (which goes first alternates too); every round's rates and
    ratio are shown, and the ratio of the best rates (the machine's other load moves single
    runs by more than the difference measured)."""
    if not persons:
        persons, per_person = (20_000, 5) if quick else (100_000, 3)
    else:
        per_person = 5
    figures: dict[str, float] = {"events": persons * per_person}
    plain: list[float] = []
    merged: list[float] = []
    for i in range(rounds):
        for share in (0.0, 0.1) if i % 2 == 0 else (0.1, 0.0):
            (merged if share else plain).append(_merging_run(persons, per_person, share))
        figures[f"round {i + 1}: without links, events/s"] = plain[-1]
        figures[f"round {i + 1}: 10 % merging, events/s"] = merged[-1]
        figures[f"round {i + 1}: ratio"] = merged[-1] / plain[-1]
    ratios = sorted(m / p for m, p in zip(merged, plain, strict=True))
    figures |= {
        "without links: events/s applied (best of rounds)": max(plain),
        "10 % of persons merging: events/s applied (best of rounds)": max(merged),
        "ratio merging / without links, best rates (target >= 0.9)": max(merged) / max(plain),
        "ratio per round, median": ratios[len(ratios) // 2],
    }
    record("aggregator, identity merge (3 funnels x 5 steps, PostgreSQL)", figures)
