"""Aggregator throughput on live traffic: persons active across batches, most events in no funnel.

A site sends page views, scrolls and clicks that no funnel step names beside the few events
its funnels are made of. Such an event is stored (a funnel defined later is backfilled from
it) but concerns no funnel of ordered or any-order mode, so no person is re-evaluated for it.
Batches of 500 live events for 2,000 persons (3 funnels of 5 steps; each person's events
spread over the batches, as live traffic is) are applied by a real ``Processor`` on
PostgreSQL: with every event a funnel step, first by a processor that keeps no persons in
memory (the person cache), so that it reads each person's events and progress back every batch, then
by one that keeps them; then with 3 events in 4 named outside every funnel. The rates are of
all events applied, measured in the same run.
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
from services.aggregator.service import tune_gc
from shared.db import create_engine, sessionmaker
from tests.databases import migrated
from tests.helpers import canonical, records
from tests.workload import CHANNELS, NAMES

START_S = 1_767_225_600
OTHER = ("page_view", "scroll", "click", "search")


async def _rate(
    processor: Processor, prefix: str, share: float, batches: int, partition: int
) -> float:
    rng = random.Random(3)
    persons = [f"{prefix}{i:05d}" for i in range(2_000)]
    expected: dict = {}
    offset, elapsed = 0, 0.0
    for _ in range(batches):
        events = [
            canonical(
                rng.choice(persons),
                rng.choice(NAMES) if rng.random() < share else rng.choice(OTHER),
                START_S + (offset + i) / 10,
                event_id=f"{prefix}-{offset + i}",
                project="bench",
                channel=rng.choice(CHANNELS),
                amount=rng.randrange(100),
            )
            for i in range(500)
        ]
        started = time.perf_counter()
        expected.update(await processor.apply(records(events, partition, offset), expected))
        elapsed += time.perf_counter() - started
        offset += 500
    return batches * 500 / elapsed


async def _run(url: str, batches: int) -> dict[str, float]:
    await _prepare(url)
    engine = create_engine(url)
    sessions = sessionmaker(engine)
    processor = Processor(sessions, "bench-traffic", horizon_us=lambda: 0)
    while await processor.backfill_step(100):  # nothing stored yet: marks the funnels live
        pass
    forgetful = Processor(sessions, "bench-traffic", horizon_us=lambda: 0, cache_capacity=0)
    read_back = await _rate(forgetful, "r", 1.0, batches, partition=0)
    funnel_only = await _rate(processor, "f", 1.0, batches, partition=1)
    mixed = await _rate(processor, "m", 0.25, batches, partition=2)
    await engine.dispose()
    return {
        "every event a funnel step, persons read back each batch: events/s applied": read_back,
        "every event a funnel step, persons kept in memory: events/s applied": funnel_only,
        "1 event in 4 a funnel step: events/s applied": mixed,
        "ratio, persons kept in memory to read back": funnel_only / read_back,
        "ratio, mixed traffic to funnel events only": mixed / funnel_only,
    }


def main(quick: bool = False) -> None:
    tune_gc()  # as the aggregator process does
    batches = 10 if quick else 40
    with migrated("postgresql", Path(tempfile.mkdtemp(prefix="bench-traffic-"))) as url:
        figures = asyncio.run(_run(url, batches))
    record("aggregator, live traffic (3 funnels x 5 steps)", figures)
