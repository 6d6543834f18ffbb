"""Computing reports from stored progress, and how long a report's answer stays exact.

On PostgreSQL inside the database; on SQLite from the range's entries in Python, off the
event loop; from the range's raw events (``raw``) when the stored entries cannot answer.
Used by the report engine and by the Prometheus gauges' refresher.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from services.api.reports import sql
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
