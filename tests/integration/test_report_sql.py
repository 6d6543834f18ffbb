"""The report PostgreSQL computes equals the Python report over the same stored entries.

Random streams go through the aggregator into a real PostgreSQL database; each is then reported
over random ranges, instants, count modes and breakdowns (all three attributions, with a group
limit small enough to form an "other" group) both ways. The Python report is itself checked
against the oracle (test_aggregator_properties), so the SQL one is too, field by field.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from services.aggregator.engine import PersonEvent
from services.aggregator.processor import Processor
from services.api.reports.computation import funnel_report_sql
from services.api.reports.python import (
    Breakdown,
    FunnelReport,
    StepReport,
    Timing,
    Window,
    funnel_report,
)
from services.api.repository import funnels as api_funnels
from services.api.repository import progress as api_progress
from shared.clock import now_us
from shared.db import create_engine, sessionmaker
from shared.funnel import US, definition_from_doc
from tests.databases import migrated
from tests.helpers import create_key, records
from tests.integration.test_aggregator_properties import BASE_US, as_canonical
from tests.unit.test_engine_properties import definitions, streams

_projects = itertools.count()
_partitions = itertools.count(10_000)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with migrated("postgresql", Path(tempfile.mkdtemp())) as url:
        yield url


queries = st.tuples(
    st.integers(-2, 22),  # range start, in 10 s steps from the stream's base
    st.integers(0, 25),  # range length
    st.integers(0, 40),  # the report's "now"
    st.sampled_from(["uniques", "totals"]),
    st.sampled_from([None, "first_touch", "last_touch", "step"]),
    st.integers(1, 4),  # attributed step
    st.integers(1, 3),  # group limit
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    doc=definitions(optional=True),
    events=streams(),
    valued=st.booleans(),
    asked=st.lists(queries, min_size=1, max_size=4),
)
def test_sql_report_equals_python_report(postgres_url, doc, events, valued, asked):
    if valued:
        doc = {**doc, "value_property": "n"}
    asyncio.run(_check(postgres_url, doc, events, asked))


async def _check(url, doc, events, asked) -> list[FunnelReport]:
    """Apply the events, then check the SQL report of each query against the Python one."""
    engine = create_engine(url)
    sessions = sessionmaker(engine)
    reports = []
    try:
        project = f"sql{next(_projects)}"
        async with sessions.begin() as session:
            await create_key(session, project, "admin")
            funnel_id = await api_funnels.create_funnel(
                session, project, {"name": "s", **doc}, now_us=now_us()
            )
        processor = Processor(sessions, f"group-{project}", horizon_us=lambda: 0)
        flat = [as_canonical(project, p, e) for p, evs in events.items() for e in evs]
        for i in range(0, len(flat), 7):
            await processor.apply(records(flat[i : i + 7], partition=next(_partitions)), {})
        while await processor.backfill_step(50):
            pass
        f = definition_from_doc(doc)
        for lo, length, now, count, attribution, step, limit in asked:
            if count == "totals" and f.order == "any":
                continue  # computed in Python on PostgreSQL too (computation.in_database)
            start = BASE_US + lo * 10 * US
            window = Window(start, start + length * 10 * US, BASE_US + now * 10 * US)
            chosen = None
            if attribution is not None:
                chosen = Breakdown("ch", attribution, min(step, len(f.steps)), limit)
            async with sessions() as session:
                entries = await api_progress.entries_in_range(
                    session, funnel_id, window.start, window.end
                )
                touches = await api_progress.touches_in_range(
                    session, funnel_id, window.start, window.end
                )
                expected = funnel_report(f, entries, window, count, chosen, touches)
            async with sessions.begin() as session:
                got = await funnel_report_sql(session, funnel_id, f, window, count, chosen)
            assert_same(got, expected)
            reports.append(got)
    finally:
        await engine.dispose()
    return reports


def test_a_disqualified_entry_that_got_further_hides_the_person(postgres_url):
    """p's furthest entry (2 steps) is disqualified and their clean one reached 1 step: p is
    not counted at all. q's clean entry reaches as far as their disqualified one: counted."""
    doc = {
        "steps": [{"event": "a"}, {"event": "b"}, {"event": "c"}],
        "window_seconds": 100,
        "order": "ordered",
        "exclusions": [{"event": "x", "from_step": 1, "to_step": 3}],
        "breakdowns": ["ch"],
    }

    def person(p: str, clean_steps: str) -> list[PersonEvent]:
        timeline = [(0, "a"), (10, "b"), (15, "x")] + [
            (200 + 10 * i, name) for i, name in enumerate(clean_steps)
        ]
        return [PersonEvent(f"{p}{i}", t * US, n, {"ch": p}) for i, (t, n) in enumerate(timeline)]

    events = {"p": person("p", "a"), "q": person("q", "ab")}
    asked = [(-2, 25, 40, "uniques", None, 1, 3), (-2, 25, 40, "uniques", "first_touch", 1, 3)]
    reports = asyncio.run(_check(postgres_url, doc, events, asked))
    for report in reports:
        assert [s.persons for s in report.steps] == [1, 1, 0]
    assert [g.value for g in reports[1].groups] == ["q"]


def assert_same(got: FunnelReport, expected: FunnelReport) -> None:
    _same_steps(got.steps, expected.steps)
    assert [g.value for g in got.groups] == [g.value for g in expected.groups]
    for a, b in zip(got.groups, expected.groups, strict=True):
        _same_steps(a.steps, b.steps)
        x, y = a.comparison, b.comparison
        assert x is not None
        assert y is not None
        assert (x.entered, x.converted, x.rest_entered, x.rest_converted, x.significant) == (
            y.entered,
            y.converted,
            y.rest_entered,
            y.rest_converted,
            y.significant,
        )
        for u, v in ((x.z, y.z), (x.low, y.low), (x.high, y.high)):
            assert u == v if v is None else u == pytest.approx(v, rel=1e-9, abs=1e-9)


def _same_steps(got: tuple[StepReport, ...], expected: tuple[StepReport, ...]) -> None:
    """Counts exactly; floats to rounding (the database sums in another order)."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert (a.step, a.name, a.persons, a.dropped, a.in_progress) == (
            b.step,
            b.name,
            b.persons,
            b.dropped,
            b.in_progress,
        )
        for field in ("conversion_from_previous", "conversion_from_start", "drop_off_rate"):
            assert getattr(a, field) == getattr(b, field), field
        for x, y in (
            (_timing(a.time_from_previous), _timing(b.time_from_previous)),
            ((a.value_sum, a.value_average), (b.value_sum, b.value_average)),
        ):
            if y is None or y == (None, None):
                assert x == y
            else:
                assert x == pytest.approx(y, rel=1e-9, abs=1e-9)


def _timing(t: Timing | None) -> tuple[float, ...] | None:
    return None if t is None else astuple(t)


def test_reports_sort_in_memory_without_jit_for_their_transaction_only(postgres_url):
    """Report statements run with a large work_mem and no JIT compilation (it spent 0.6 s
    compiling each report over 1,000,000 persons), set for their own transaction only.
    (Only work_mem can show the latter: asyncpg turns JIT off for the whole connection when it
    first looks up a result type, and turns it back on only if it was on.)"""
    doc = {"steps": [{"event": "a"}, {"event": "b"}], "window_seconds": 100}

    async def settings_seen() -> tuple[str, tuple[str, str], str]:
        engine = create_engine(postgres_url)
        show = text("SELECT current_setting('jit'), current_setting('work_mem')")
        try:
            async with sessionmaker(engine)() as session:
                before = (await session.execute(show)).one()[1]
                window = Window(BASE_US, BASE_US + 100 * US, BASE_US + 200 * US)
                await funnel_report_sql(session, "f", definition_from_doc(doc), window)
                during = (await session.execute(show)).one()
                await session.commit()
                after = (await session.execute(show)).one()[1]
        finally:
            await engine.dispose()
        return before, (during[0], during[1]), after

    before, during, after = asyncio.run(settings_seen())
    assert during == ("off", "256MB")
    assert after == before != "256MB"
