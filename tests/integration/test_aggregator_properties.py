"""Property-based, on real databases: random batches through the aggregator equal the oracle.

Each example uses its own project in the test's database. Events are split into random
batches, shuffled, partly duplicated and redelivered, and the funnel is defined part-way
through, so both the live path and the backfill are exercised.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.aggregator.engine import PersonEvent
from services.aggregator.processor import Processor
from services.api import repository as api_repo
from services.api.report import Window, funnel_report
from shared.db import create_engine, sessionmaker
from shared.events import CanonicalEvent
from shared.funnel import US, definition_from_doc
from shared.keys import create_key
from tests.helpers import records
from tests.oracle import oracle_report
from tests.unit.test_engine_properties import definitions, streams

BASE_US = 1_767_225_600 * US  # 2026-01-01
_projects = itertools.count()
_partitions = itertools.count()


def as_canonical(project: str, person: str, e: PersonEvent) -> CanonicalEvent:
    ts = datetime.fromtimestamp((BASE_US + e.ts) / US, UTC)
    return CanonicalEvent(
        project_id=project,
        event_id=e.event_id,
        person_id=person,
        user_id=person,
        event=e.name,
        timestamp=ts,
        received_at=ts,
        properties=dict(e.properties),
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(doc=definitions(), events=streams(), cut=st.integers(0, 100), seed=st.randoms())
def test_batches_through_the_database_equal_the_oracle(database_url, doc, events, cut, seed):
    asyncio.run(_check(database_url, doc, events, cut, seed))


async def _check(database_url, doc, events, cut, seed) -> None:
    engine = create_engine(database_url)
    try:
        await _compare(sessionmaker(engine), doc, events, cut, seed)
    finally:
        await engine.dispose()


async def _compare(sessions, doc, events, cut, seed) -> None:
    project = f"prop{next(_projects)}"
    flat = [as_canonical(project, p, e) for p, evs in events.items() for e in evs]
    seed.shuffle(flat)
    split = len(flat) * cut // 100
    processor = Processor(sessions, f"group-{project}", horizon_us=lambda: 0)

    async def deliver(batch: list[CanonicalEvent]) -> None:
        for i in range(0, len(batch), 5):
            # A fresh partition per chunk: offsets are not what this test is about.
            await processor.apply(records(batch[i : i + 5], partition=next(_partitions)), {})

    await deliver(flat[:split])
    async with sessions.begin() as session:
        await create_key(session, project, "admin")
        funnel_id = await api_repo.create_funnel(session, project, {"name": "p", **doc})
    await deliver(flat[split:] + flat[: split // 2])  # later events plus redelivered ones
    while await processor.backfill_step(2):
        pass
    f = definition_from_doc(doc)
    window = Window(BASE_US, BASE_US + 10**9 * US, BASE_US + 10**9 * US)
    async with sessions() as session:
        entries = await api_repo.entries_in_range(session, funnel_id, window.start, window.end)
    got = funnel_report(f, entries, window, "uniques")
    shifted = {
        p: [PersonEvent(e.event_id, BASE_US + e.ts, e.name, e.properties) for e in evs]
        for p, evs in events.items()
    }
    expected = oracle_report(f, shifted, window.start, window.end, window.now)
    assert [s.persons for s in got.steps] == expected.persons
