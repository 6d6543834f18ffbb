"""Computing reports from stored progress, and how long a report's answer stays exact.

On PostgreSQL inside the database; on SQLite from the range's entries in Python, off the
event loop; from the range's raw events (``raw``) when the stored entries cannot answer.
Used by the report engine and by the Prometheus gauges' refresher. Trends, the forecast and
the gauges are read from the API's columnar replica (:mod:`services.api.replica`) when it
holds the funnel's version and its layout covers the request, as the report is
(``engine._Work``); else from the database, while the replica loads the funnel.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

from services.api.replica import Replica
from services.api.reports import columnar, sql
from services.api.reports.forecast import PipelineTally, pipeline_tally
from services.api.reports.python import (
    Breakdown,
    Counted,
    FunnelReport,
    Window,
    counted_entries,
    funnel_report,
)
from services.api.reports.raw import (
    entries_from_events,
    events_reach_us,
    needs_events,
    report_from_events,
)
from services.api.reports.trends import cohort_reports_in_python
from services.api.repository import Session, progress
from services.api.repository.funnels import FunnelRow
from shared.db import is_postgres
from shared.funnel import Condition, CountMode, FunnelDefinition

FOREVER_US = 2**62


def in_database(session: Session, definition: FunnelDefinition, count: CountMode) -> bool:
    """Whether the database computes the counting itself: PostgreSQL, but not ``totals`` in
    ``any`` order, whose attempts are chosen one after another (``totals_entries``)."""
    return is_postgres(session) and not (count == "totals" and definition.order == "any")


async def funnel_report_sql(
    session: Session,
    funnel_id: str,
    definition: FunnelDefinition,
    window: Window,
    count: CountMode = "uniques",
    breakdown: Breakdown | None = None,
) -> FunnelReport:
    """The report computed inside PostgreSQL."""
    statement, params = sql.report_statement(funnel_id, definition, window, count, breakdown)
    rows = await progress.over_a_range(session, statement, params)
    return sql.report_from_rows(definition, rows, breakdown)


async def compute_report(
    session: Session,
    funnel: tuple[str, str],
    definition: FunnelDefinition,
    window: Window,
    mode: CountMode,
    chosen: Breakdown | None,
    filters: Sequence[Condition] = (),
) -> FunnelReport:
    """The report of ``funnel`` (project id, funnel id): from raw events when the stored
    entries cannot answer (``raw.needs_events``); else in PostgreSQL itself when it is the
    database, but for ``totals`` in ``any`` order (attempts are chosen one after another);
    else from the entries, in Python."""
    project_id, funnel_id = funnel
    if needs_events(definition, chosen, filters):
        lo, hi = events_reach_us(definition, window)
        found = await progress.events_in_range(session, project_id, lo, hi)
        return await asyncio.to_thread(
            report_from_events, definition, found, window, mode, chosen, filters
        )
    if in_database(session, definition, mode):
        return await funnel_report_sql(session, funnel_id, definition, window, mode, chosen)
    entries = await progress.entries_in_range(session, funnel_id, window.start, window.end)
    touches = (
        await progress.touches_in_range(session, funnel_id, window.start, window.end)
        if chosen and chosen.attribution != "step"
        else None
    )
    # CPU-bound for large ranges: off the event loop, so other requests keep being served.
    return await asyncio.to_thread(
        funnel_report, definition, entries, window, mode, chosen, touches
    )


async def counted_in_range(
    session: Session,
    funnel: tuple[str, str],
    definition: FunnelDefinition,
    window: Window,
    mode: CountMode,
    filters: Sequence[Condition] = (),
) -> list[Counted]:
    """The counted entries of the range (from raw events when there are filters)."""
    project_id, funnel_id = funnel
    if filters:
        lo, hi = events_reach_us(definition, window)
        found = await progress.events_in_range(session, project_id, lo, hi)
        entries, _ = await asyncio.to_thread(
            entries_from_events, definition, found, window, filters
        )
    else:
        entries = await progress.entries_in_range(session, funnel_id, window.start, window.end)
    return await asyncio.to_thread(counted_entries, definition, entries, mode)


async def cohort_reports(
    session: Session,
    funnel_id: str,
    definition: FunnelDefinition,
    windows: Sequence[Window],
    count: CountMode,
) -> list[FunnelReport]:
    """One report per cohort range (consecutive ``windows``): in PostgreSQL, one statement
    each over the entries of its range; else from the entries of their span, in Python, off
    the event loop."""
    if in_database(session, definition, count):
        return [await funnel_report_sql(session, funnel_id, definition, w, count) for w in windows]
    if not windows:
        return []
    entries = await progress.entries_in_range(session, funnel_id, windows[0].start, windows[-1].end)
    return await asyncio.to_thread(cohort_reports_in_python, definition, entries, windows, count)


def replica_for(
    replica: Replica | None,
    funnel: tuple[str, int, bool],
    definition: FunnelDefinition,
    count: CountMode,
    breakdown: Breakdown | None = None,
) -> Replica | None:
    """The replica when it may answer for the funnel (id, version, backfill done) now: its
    backfill is done, the layout covers the request exactly and the replica holds this
    version; else ``None``, and the replica starts loading the funnel's version if it lacks
    it."""
    funnel_id, version, backfill_done = funnel
    if replica is None or not backfill_done or not columnar.covers(definition, count, breakdown):
        return None
    if not replica.holds(funnel_id, version):
        replica.want(funnel_id, version, definition)
        return None
    return replica


def row_key(row: FunnelRow) -> tuple[str, int, bool]:
    """What ``replica_for`` needs of a funnel's row."""
    return row.id, row.version, row.backfill_done


async def cohort_reports_served(
    session: Session,
    row: FunnelRow,
    definition: FunnelDefinition,
    windows: Sequence[Window],
    count: CountMode,
    replica: Replica | None,
    complete_to_us: int | None,
) -> tuple[list[FunnelReport], int | None]:
    """Trends' reports (``cohort_reports``) and the instant they are complete to: from the
    replica when it may answer, else from the database (``complete_to_us``: read before).
    The replica's one statement for all cohorts needs them disjoint, in ascending order and
    of one "now", as ``trends.cohort_bounds`` makes them."""
    chosen = None
    if windows and _ascending(windows):
        chosen = replica_for(replica, row_key(row), definition, count)
    if chosen is not None:
        # Hold no transaction while the replica reads in sessions of its own (on SQLite
        # each holds the write lock); this session was only read.
        await session.commit()
        found = await chosen.cohort_reports(row.id, row.version, definition, windows, count)
        if found is not None:
            return found
    return await cohort_reports(session, row.id, definition, windows, count), complete_to_us


def _ascending(windows: Sequence[Window]) -> bool:
    return all(a.end <= b.start and a.now == b.now for a, b in itertools.pairwise(windows))


async def pipeline_served(
    session: Session,
    row: FunnelRow,
    definition: FunnelDefinition,
    window: Window,
    count: CountMode,
    replica: Replica | None,
    complete_to_us: int | None,
) -> tuple[PipelineTally, int | None]:
    """The forecast's tally (``pipeline``) and the instant it is complete to: from the
    replica when it may answer, else from the database (``complete_to_us``: read before)."""
    chosen = replica_for(replica, row_key(row), definition, count)
    if chosen is not None:
        await session.commit()  # as in cohort_reports_served
        found = await chosen.pipeline(row.id, row.version, definition, window, count)
        if found is not None:
            return found
    return await pipeline(session, row.id, definition, window, count), complete_to_us


async def pipeline(
    session: Session,
    funnel_id: str,
    definition: FunnelDefinition,
    window: Window,
    count: CountMode,
) -> PipelineTally:
    """What the pipeline forecast is made from: in PostgreSQL itself, else in Python."""
    if in_database(session, definition, count):
        statement, params = sql.pipeline_statement(funnel_id, definition, window, count)
        rows = await progress.over_a_range(session, statement, params)
        return sql.pipeline_from_rows(definition, rows)
    entries = await progress.entries_in_range(session, funnel_id, window.start, window.end)
    counted = counted_entries(definition, entries, count)
    return await asyncio.to_thread(pipeline_tally, definition, counted, window.now)


async def valid_until(
    session: Session,
    funnel_id: str,
    definition: FunnelDefinition,
    window: Window,
    *,
    open_end: bool,
    rolling: int | None,
) -> int:
    """The first instant the report of these stored entries can read differently."""
    limits = []
    # The earliest entry whose conversion window is still open closes it first.
    w = definition.window_us
    first_open = await progress.first_entry_from(
        session, funnel_id, max(window.start, window.now - w + 1), window.end
    )
    if first_open is not None:
        limits.append(first_open + w)
    if open_end:  # "to" is now: an entry dated ahead of the clock joins the range
        ahead = await progress.first_entry_from(session, funnel_id, window.end)
        if ahead is not None:
            limits.append(ahead + 1)
        if rolling is not None:  # "from" follows "to": the earliest entry leaves the range
            first = await progress.first_entry_from(session, funnel_id, window.start, window.end)
            if first is not None:
                limits.append(first + rolling + 1)
    return min(limits, default=FOREVER_US)
