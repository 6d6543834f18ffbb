"""Aggregator cost per live event for persons with long histories, against new persons.

A batch re-evaluates each of its persons from their stored events, so what a person's long
past costs per live event decides whether throughput holds up as a product ages. 200 persons
get 1,000 stored events each over 100 days (3 funnels of 5 steps, 1-day windows, backfilled);
then batches of live events for them are applied by a real ``Processor`` on PostgreSQL, and
the same batches for 200 persons with no history (the baseline, measured in the same run).
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path

from bench.aggregator import _prepare
from bench.common import record
from services.aggregator.processor import Processor
from services.aggregator.repository.events import store_events
from services.aggregator.service import tune_gc
from shared.db import create_engine, sessionmaker
from tests.databases import migrated
from tests.helpers import canonical, records
from tests.workload import CHANNELS, NAMES

LIVE_S = 1_767_225_600 + 101 * 86_400  # after the stored history


def _event(rng: random.Random, person: str, n: int, at_s: float):
    return canonical(
        person,
        rng.choice(NAMES),
        at_s,
        event_id=f"{person}-{n}",
        project="bench",
        channel=rng.choice(CHANNELS),
        amount=rng.randrange(100),
    )


async def _seed_history(sessions, persons: list[str], per_person: int, days: int) -> None:
    rng = random.Random(5)
    start = LIVE_S - (days + 1) * 86_400
    batch = []
    for person in persons:
        times = sorted(start + rng.uniform(0, days * 86_400) for _ in range(per_person))
        batch.extend(_event(rng, person, n, t) for n, t in enumerate(times))
    for i in range(0, len(batch), 10_000):
        async with sessions.begin() as session:
            await store_events(session, batch[i : i + 10_000])


async def _live_rate(
    processor: Processor, persons: list[str], batches: int, size: int, partition: int
) -> float:
    rng = random.Random(9)
    expected: dict = {}
    offset, elapsed = 0, 0.0
    for _ in range(batches):
        events = [
            _event(rng, rng.choice(persons), 100_000 + offset + i, LIVE_S + offset + i)
            for i in range(size)
        ]
        started = time.perf_counter()
        expected.update(await processor.apply(records(events, partition, offset), expected))
        elapsed += time.perf_counter() - started
        offset += size
    return batches * size / elapsed


async def _run(url: str, persons: int, per_person: int, batches: int) -> dict[str, float]:
    engine = create_engine(url)
    sessions = sessionmaker(engine)
    heavy = [f"h{i:05d}" for i in range(persons)]
    fresh = [f"n{i:05d}" for i in range(persons)]
    started = time.perf_counter()
    await _seed_history(sessions, heavy, per_person, 100)
    await engine.dispose()
    await _prepare(url)  # the funnels, then their backfill over the stored history
    engine = create_engine(url)
    processor = Processor(sessionmaker(engine), "bench-histories", horizon_us=lambda: 0)
    while await processor.backfill_step(100):
        pass
    seeded = time.perf_counter() - started
    short = await _live_rate(processor, fresh, batches, 500, partition=0)
    long = await _live_rate(processor, heavy, batches, 500, partition=1)
    await engine.dispose()
    return {
        "seed and backfill, s": seeded,
        "new persons: live events/s applied": short,
        f"persons with {per_person:,} stored events: live events/s applied": long,
        "ratio, long histories to new persons (target: near 1)": long / short,
    }


def main(quick: bool = False) -> None:
    tune_gc()  # as the aggregator process does
    persons, per_person, batches = (100, 300, 5) if quick else (200, 1_000, 10)
    with migrated("postgresql", Path(tempfile.mkdtemp(prefix="bench-histories-"))) as url:
        figures = asyncio.run(_run(url, persons, per_person, batches))
    record(
        f"aggregator, {persons} persons with {per_person:,} stored events each vs new persons",
        figures,
    )
