"""Trends, the pipeline forecast, diagnosis and the gauges read from the columnar replica
equal what the database path computes, on SQLite and PostgreSQL, when the replica has
loaded the funnel whole and after it has followed more batches (late and duplicated
events) through the progress log; and each answer was the replica's (``served`` grew).

Random streams go through the aggregator into a real database, as in
tests/integration/test_report_columnar.py; the database path is the one each of them takes
without a replica (PostgreSQL statements; Python over the entries on SQLite).
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.aggregator.processor import Processor
from services.api.metrics import Kept, refresh_gauges
from services.api.replica import Replica
from services.api.reports import columnar
from services.api.reports.computation import cohort_reports, compute_report, pipeline
from services.api.reports.diagnosis import diagnose
from services.api.reports.forecast import PipelineTally
from services.api.reports.python import Breakdown, Window
from services.api.repository import funnels as api_funnels
from shared.clock import FixedClock, now_us
from shared.db import create_engine, sessionmaker
from shared.funnel import US, FunnelDefinition, definition_from_doc
from tests.databases import migrated
from tests.helpers import create_key, records
from tests.integration.test_aggregator_properties import BASE_US, as_canonical
from tests.integration.test_report_sql import assert_same
from tests.unit.test_engine_properties import definitions, streams

_projects = itertools.count()
_partitions = itertools.count(40_000)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    with migrated(request.param, Path(tempfile.mkdtemp())) as url:
        yield url


queries = st.tuples(
    st.integers(-2, 22),  # first cohort's start, in 10 s steps from the stream's base
    st.integers(1, 8),  # cohort length
    st.integers(1, 4),  # cohorts
    st.integers(0, 40),  # the reports' "now"
    st.sampled_from(["uniques", "totals"]),
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    doc=definitions(optional=True),
    events=streams(),
    valued=st.booleans(),
    split=st.integers(0, 100),
    again=st.integers(0, 5),
    asked=st.lists(queries, min_size=1, max_size=2),
)
def test_series_from_the_replica_equal_the_database_path(
    database_url, doc, events, valued, split, again, asked
):
    if valued:
        doc = {**doc, "value_property": "n"}
    asyncio.run(_check(database_url, doc, events, split, again, asked))


async def _check(url, doc, events, split, again, asked) -> None:
    engine = create_engine(url)
    sessions = sessionmaker(engine)
    replica = Replica(sessions, "no-group", load_slice=2)
    project = f"ser{next(_projects)}"
    try:
        async with sessions.begin() as session:
            await create_key(session, project, "admin")
            funnel_id = await api_funnels.create_funnel(
                session, project, {"name": "s", **doc}, now_us=now_us()
            )
        processor = Processor(sessions, f"group-{project}", horizon_us=lambda: 0)
        flat = [as_canonical(project, p, e) for p, evs in events.items() for e in evs]
        cut = len(flat) * split // 100
        first, later = flat[cut:], flat[:cut] + flat[cut:][:again]  # late, and some again
        f = definition_from_doc(doc)

        async def apply(part):
            for i in range(0, len(part), 7):
                await processor.apply(records(part[i : i + 7], partition=next(_partitions)), {})
            while await processor.backfill_step(50):
                pass

        await apply(first)
        await replica.load(funnel_id, 1, f)
        await _compare(sessions, replica, funnel_id, f, asked)
        await apply(later)
        await _compare(sessions, replica, funnel_id, f, asked)
    finally:
        async with sessions.begin() as session:  # the gauges read every funnel stored
            await api_funnels.delete_funnel(session, funnel_id)
        await replica.close()
        await engine.dispose()


async def _compare(sessions, replica, funnel_id, f, asked) -> None:
    for lo, length, cohorts, now, count in asked:
        start, step = BASE_US + lo * 10 * US, length * 10 * US
        windows = [
            Window(start + i * step, start + (i + 1) * step, BASE_US + now * 10 * US)
            for i in range(cohorts)
        ]
        if columnar.covers(f, count, None):
            await _same_trends(sessions, replica, funnel_id, f, windows, count)
            for window in windows:
                await _same_pipeline(sessions, replica, funnel_id, f, window, count)
        await _same_diagnosis(sessions, replica, funnel_id, f, windows[-1])
        await _same_gauges(sessions, replica, funnel_id, windows[0].now)


async def _same_trends(sessions, replica, funnel_id, f, windows, count) -> None:
    async with sessions() as session:
        expected = await cohort_reports(session, funnel_id, f, windows, count)
    served = replica.served
    found = await replica.cohort_reports(funnel_id, 1, f, windows, count)
    assert found is not None
    assert replica.served == served + 1
    assert len(found[0]) == len(expected)
    for got, want in zip(found[0], expected, strict=True):
        assert_same(got, want)


async def _same_pipeline(sessions, replica, funnel_id, f, window, count) -> None:
    async with sessions() as session:
        expected = await pipeline(session, funnel_id, f, window, count)
    found = await replica.pipeline(funnel_id, 1, f, window, count)
    assert found is not None
    assert_same_tally(found[0], expected)


def assert_same_tally(got: PipelineTally, expected: PipelineTally) -> None:
    """Counts exactly; value sums to rounding (the engines sum in another order)."""
    assert (got.open, got.closed) == (expected.open, expected.closed)
    assert got.open_value == pytest.approx(expected.open_value, rel=1e-9, abs=1e-9)


async def _same_diagnosis(sessions, replica, funnel_id, f: FunnelDefinition, window) -> None:
    """As the diagnosis route asks: unique persons, by first touch of the first declared
    breakdown, up to 1,000 groups."""
    chosen = Breakdown("ch", "first_touch", 1, 1000)
    async with sessions() as session:
        expected = await compute_report(session, ("", funnel_id), f, window, "uniques", chosen)
    found = await replica.report(funnel_id, 1, f, window, "uniques", chosen)
    assert found is not None
    assert_same(found[0], expected)
    assert diagnose(f, found[0]) == diagnose(f, expected)


async def _same_gauges(sessions, replica, funnel_id, now: int) -> None:
    clock = FixedClock(now)
    from_database: dict[str, Kept] = {}
    await refresh_gauges(sessions, 1, from_database, clock)
    from_replica: dict[str, Kept] = {}
    served = replica.served
    await refresh_gauges(sessions, 1, from_replica, clock, replica)
    assert replica.served == served + 1
    assert from_replica[funnel_id] == from_database[funnel_id]
