"""The report the columnar replica computes equals the Python report over the same stored
entries, on SQLite and PostgreSQL, when loaded whole, after it has followed more batches
(late and duplicated events) through the progress log, and after a redefinition (a new
version loaded into new tables); the forecast's tally as well.

Random streams go through the aggregator into a real database; a replica loads the funnel,
then a second part of the stream (with some events of the first delivered again) is applied
and the replica catches up from the log. Each time random ranges, instants, count modes and
breakdowns (first and last touch, a group limit small enough to form an "other" group) are
reported both ways and compared field by field (tests/integration/test_report_sql.py).
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

from services.aggregator.changes import ProgressChanges
from services.aggregator.processor import Processor
from services.aggregator.repository.progress import save_progress
from services.api.replica import Replica
from services.api.reports import columnar
from services.api.reports.forecast import pipeline_tally
from services.api.reports.python import Breakdown, Window, counted_entries, funnel_report
from services.api.repository import funnels as api_funnels
from services.api.repository import progress as api_progress
from shared.clock import now_us
from shared.db import create_engine, sessionmaker
from shared.funnel import US, Entry, definition_from_doc
from tests.databases import migrated
from tests.helpers import create_key, records
from tests.integration.test_aggregator_properties import BASE_US, as_canonical
from tests.integration.test_report_sql import assert_same
from tests.unit.test_engine_properties import definitions, streams

_projects = itertools.count()
_partitions = itertools.count(20_000)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    with migrated(request.param, Path(tempfile.mkdtemp())) as url:
        yield url


queries = st.tuples(
    st.integers(-2, 22),  # range start, in 10 s steps from the stream's base
    st.integers(0, 25),  # range length
    st.integers(0, 40),  # the report's "now"
    st.sampled_from(["uniques", "totals"]),
    st.sampled_from([None, "first_touch", "last_touch"]),
    st.integers(1, 3),  # group limit
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    doc=definitions(optional=True),
    events=streams(),
    valued=st.booleans(),
    split=st.integers(0, 100),
    again=st.integers(0, 5),
    asked=st.lists(queries, min_size=1, max_size=3),
)
def test_columnar_report_equals_python_report(
    database_url, doc, events, valued, split, again, asked
):
    if valued:
        doc = {**doc, "value_property": "n"}
    asyncio.run(_check(database_url, doc, events, split, again, asked))


async def _check(url, doc, events, split, again, asked) -> None:
    engine = create_engine(url)
    sessions = sessionmaker(engine)
    replica = Replica(sessions, "no-group", load_slice=2)  # loads in slices of 2 persons
    try:
        project = f"col{next(_projects)}"
        async with sessions.begin() as session:
            await create_key(session, project, "admin")
            funnel_id = await api_funnels.create_funnel(
                session, project, {"name": "c", **doc}, now_us=now_us()
            )
        processor = Processor(sessions, f"group-{project}", horizon_us=lambda: 0)
        flat = [as_canonical(project, p, e) for p, evs in events.items() for e in evs]
        # The later part goes first to the replica's log: late events, and some again.
        cut = len(flat) * split // 100
        first, later = flat[cut:], flat[:cut] + flat[cut:][:again]
        f = definition_from_doc(doc)

        async def apply(part):
            for i in range(0, len(part), 7):
                await processor.apply(records(part[i : i + 7], partition=next(_partitions)), {})
            while await processor.backfill_step(50):
                pass

        await apply(first)
        await replica.load(funnel_id, 1, f)
        await _compare(sessions, replica, funnel_id, 1, f, asked)
        await apply(later)
        await _compare(sessions, replica, funnel_id, 1, f, asked)
        # A redefinition: another window, and a second breakdown property (the numbers).
        doc = {**doc, "window_seconds": 160 - doc["window_seconds"], "breakdowns": ["ch", "n"]}
        async with sessions.begin() as session:
            await api_funnels.redefine_funnel(
                session, funnel_id, {"name": "c", **doc}, now_us=now_us()
            )
        while await processor.backfill_step(50):
            pass
        f = definition_from_doc(doc)
        await replica.load(funnel_id, 2, f)
        assert await replica.report(funnel_id, 1, f, Window(0, 1, 1), "uniques", None) is None
        await _compare(sessions, replica, funnel_id, 2, f, asked)
    finally:
        await replica.close()
        await engine.dispose()


async def _compare(sessions, replica, funnel_id, version, f, asked) -> None:
    for (lo, length, now, count, attribution, limit), prop in itertools.product(
        asked, f.breakdowns
    ):
        chosen = None if attribution is None else Breakdown(prop, attribution, 1, limit)
        if not columnar.covers(f, count, chosen):
            continue
        start = BASE_US + lo * 10 * US
        window = Window(start, start + length * 10 * US, BASE_US + now * 10 * US)
        async with sessions() as session:
            entries = await api_progress.entries_in_range(
                session, funnel_id, window.start, window.end
            )
            touches = await api_progress.touches_in_range(
                session, funnel_id, window.start, window.end
            )
        expected = funnel_report(f, entries, window, count, chosen, touches)
        found = await replica.report(funnel_id, version, f, window, count, chosen)
        assert found is not None
        assert_same(found[0], expected)
        if chosen is None:
            tally = await replica.pipeline(funnel_id, version, f, window, count)
            assert tally is not None
            counted = counted_entries(f, entries, count)
            assert tally[0] == pipeline_tally(f, counted, window.now)


def test_a_batch_committed_after_a_later_one_is_still_applied(database_url):
    """Batches commit in another order than they took their log ids (PostgreSQL: ids are
    taken before commit; SQLite: one writer, so the second waits): the replica still applies
    the batch committed last, and states nothing of it before."""
    asyncio.run(_out_of_order(database_url))


async def _out_of_order(url: str) -> None:
    engine = create_engine(url)
    sessions = sessionmaker(engine)
    replica = Replica(sessions, "no-group")
    doc = {"steps": [{"event": "a"}, {"event": "b"}], "window_seconds": 100}
    f = definition_from_doc(doc)
    window = Window(BASE_US, BASE_US + 100 * US, BASE_US + 1_000 * US)

    def one(person: str, t0: int) -> ProgressChanges:
        entry = Entry(BASE_US + t0 * US, (BASE_US + t0 * US,), False, {})
        return ProgressChanges(entries=[(person, entry)], changed={person})

    async def persons() -> int:
        found = await replica.report(funnel_id, 1, f, window, "uniques", None)
        assert found is not None
        return found[0].steps[0].persons

    try:
        async with sessions.begin() as session:
            project = f"ooo{next(_projects)}"
            await create_key(session, project, "admin")
            funnel_id = await api_funnels.create_funnel(
                session, project, {"name": "o", **doc}, now_us=now_us()
            )
        await replica.load(funnel_id, 1, f)
        assert await persons() == 0
        if "postgresql" in url:
            first = sessions()
            await first.begin()
            await save_progress(first, funnel_id, one("a", 1), 0)  # takes the lower id
            async with sessions.begin() as second:
                await save_progress(second, funnel_id, one("b", 2), 0)
            assert await persons() == 1  # b only: a's batch has not committed
            await first.commit()
            await first.close()
        else:
            for person, t0 in (("a", 1), ("b", 2)):
                async with sessions.begin() as session:
                    await save_progress(session, funnel_id, one(person, t0), 0)
        assert await persons() == 2
    finally:
        await replica.close()
        await engine.dispose()
