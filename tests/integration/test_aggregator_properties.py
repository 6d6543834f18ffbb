"""Property-based, on real databases: random batches through the aggregator equal the oracle.

Each example uses its own project in the test's database. Events are split into random
batches, shuffled, partly duplicated and redelivered, and the funnel is defined part-way
through and partly backfilled before the rest arrives, so both the live path (which
re-evaluates only as far back as a batch's events reach) and the backfill are exercised.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from services.aggregator.engine import PersonEvent, evaluate
from services.aggregator.processor import Processor
from services.api.reports.python import Window, funnel_report
from services.api.repository import funnels as api_funnels
from services.api.repository import progress as api_progress
from shared.clock import now_us
from shared.db import create_engine, sessionmaker
from shared.events import CanonicalEvent
from shared.funnel import US, Entry, Touch, definition_from_doc
from shared.tables import remarketing_timers as timers_table
from tests.helpers import create_key, records
from tests.oracle import oracle_report
from tests.oracle_journeys import journey_timers
from tests.stored_bounds import assert_stored_bounds_hold
from tests.unit.test_engine_properties import definitions, streams, with_rules

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


# Re-marketing rules whose offsets reach past the 60-100 s windows of the random funnels,
# so that how far back a batch re-evaluates is tested for timers as well as for entries.
RULES = [
    None,
    {"name": "late", "from_step": 1, "after_seconds": 50, "grace_seconds": 0},
    {
        "name": "again",
        "from_step": 1,
        "after_seconds": 30,
        "repeat_every_seconds": 40,
        "until_seconds": 150,
        "grace_seconds": 0,
    },
]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    doc=definitions(optional=True),
    rule=st.sampled_from(RULES),
    events=streams(),
    cut=st.integers(0, 100),
    early=st.integers(0, 4),
    chunk=st.sampled_from([1, 5]),
    seed=st.randoms(),
)
def test_batches_through_the_database_equal_the_oracle(
    database_url, doc, rule, events, cut, early, chunk, seed
):
    if rule is not None:
        doc = {**doc, "remarketing": [{**rule, "goal_step": len(doc["steps"])}]}
    asyncio.run(_check(database_url, doc, events, cut, early, chunk, seed))


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    doc=with_rules(orders=("any",)),
    events=streams(grid=40),
    cut=st.integers(0, 50),
    seed=st.randoms(),
)
def test_any_order_timers_from_late_batches_are_one_set_per_journey(
    database_url, doc, events, cut, seed
):
    """Events spread over 800 s, farther than a batch reaches back (window plus offsets,
    at most 250 s): batches re-evaluate persons from a bound, reading one window before it,
    and must leave the timers of the whole history, one set per journey."""
    # The backfill covers every person (5 steps) before the rest arrives: all of it is live.
    asyncio.run(_check(database_url, doc, events, cut, 5, 1, seed, in_time_order=True))


async def _check(database_url, doc, events, cut, early, chunk, seed, in_time_order=False) -> None:
    engine = create_engine(database_url)
    try:
        await _compare(sessionmaker(engine), doc, events, cut, early, chunk, seed, in_time_order)
    finally:
        await engine.dispose()


async def _compare(sessions, doc, events, cut, early, chunk, seed, in_time_order=False) -> None:
    project = f"prop{next(_projects)}"
    flat = [as_canonical(project, p, e) for p, evs in events.items() for e in evs]
    seed.shuffle(flat)
    split = len(flat) * cut // 100
    processor = Processor(sessions, f"group-{project}", horizon_us=lambda: 0)

    async def deliver(batch: list[CanonicalEvent]) -> None:
        for i in range(0, len(batch), chunk):
            # A fresh partition per chunk: offsets are not what this test is about.
            part = next(_partitions)
            await processor.apply(records(batch[i : i + chunk], partition=part), {})

    await deliver(flat[:split])
    async with sessions.begin() as session:
        await create_key(session, project, "admin")
        funnel_id = await api_funnels.create_funnel(
            session, project, {"name": "p", **doc}, now_us=now_us()
        )
    # The backfill covers ``early`` persons (all of them, and anyone new, once it runs out)
    # before the rest arrives: their later events go through the live path.
    for _ in range(early):
        await processor.backfill_step(1)
    later = flat[split:]
    if in_time_order:
        # The rest one per batch in time order, half of them with the person cache emptied
        # first: each re-evaluates its person from its own bound on (read from the cache or
        # the database), and the last to reach an entry is the one that re-reads least
        # before it, so an entry judged without the window before it would show.
        for e in sorted(later, key=lambda e: (e.timestamp, e.event_id)):
            if seed.random() < 0.5:
                processor.cache.clear()
            await deliver([e])
        later = []
    await deliver(later + flat[: split // 2])  # later events plus redelivered ones
    while await processor.backfill_step(2):
        pass
    f = definition_from_doc(doc)
    window = Window(BASE_US, BASE_US + 10**9 * US, BASE_US + 10**9 * US)
    async with sessions() as session:
        entries = await api_progress.entries_in_range(session, funnel_id, window.start, window.end)
    got = funnel_report(f, entries, window, "uniques")
    shifted = {
        p: [PersonEvent(e.event_id, BASE_US + e.ts, e.name, e.properties) for e in evs]
        for p, evs in events.items()
    }
    expected = oracle_report(f, shifted, window.start, window.end, window.now)
    assert [s.persons for s in got.steps] == expected.persons
    # The bounds the batches and the backfill stored are those of the stored rows.
    await assert_stored_bounds_hold(sessions, funnel_id)
    # Every stored row, not only the counts: what the batches left (each re-evaluating only
    # as far back as its events can reach) is what evaluating each whole history gives.
    t = timers_table.c
    async with sessions() as session:
        touches = await api_progress.touches_in_range(session, funnel_id, window.start, window.end)
        timers = await session.execute(
            select(t.person_id, t.rule, t.entry_t0_us, t.occurrence, t.due_us).where(
                t.funnel_id == funnel_id, t.status == "pending"
            )
        )
        stored_timers = sorted(tuple(r) for r in timers)
    whole = {p: evaluate(f, evs) for p, evs in shifted.items()}
    assert _sorted_entries(entries) == _sorted_entries(
        {p: list(progress.entries) for p, progress in whole.items()}
    )
    assert {p: sorted(ts, key=_touch_key) for p, ts in touches.items() if ts} == {
        p: sorted(progress.touches, key=_touch_key)
        for p, progress in whole.items()
        if progress.touches
    }
    # Entries that start at the same instant share their timers (one notice per start).
    assert stored_timers == sorted(journey_timers(f, shifted))
    assert stored_timers == sorted(
        {
            (p, x.rule, x.entry_t0, x.occurrence, x.due_us)
            for p, progress in whole.items()
            for x in progress.timers
            if not x.cancelled
        }
    )


def _sorted_entries(entries: dict[str, list[Entry]]) -> list[tuple[str, Entry]]:
    found = [(p, e) for p, es in entries.items() for e in es]
    return sorted(found, key=lambda pe: (pe[0], pe[1].t0, pe[1].step_times, repr(pe[1])))


def _touch_key(touch: Touch) -> tuple[int, int]:
    return (touch.ts, touch.seq)
