"""A funnel's report as an answer serves it: kept or computed, with the instant its data is
complete to. Used by the report, chart, plan, diagnosis and shared chart routes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import Request

from services.api import repository
from services.api.freshness import read_freshness
from services.api.limits import bounded_range
from services.api.report import Breakdown, Window
from services.api.report_cache import Computed
from services.api.reporting import compute_report, valid_until
from shared.events import format_time, from_micros, to_micros
from shared.funnel import CountMode, definition_from_doc
from shared.keys import now_us

DAY_US = 86_400_000_000
How = Literal["computed", "exact", "stale"]  # how a report answer was made
PERSONS_TTL_S = 30.0


@dataclass(frozen=True, slots=True)
class Served:
    computed: Computed
    how: How
    # Every event acknowledged before this instant is counted in ``computed`` (None: unknown).
    complete_to_us: int | None


def sessions(request: Request) -> Any:
    return request.app.state.api.sessions


def complete_to(instant_us: int | None, row: repository.FunnelRow) -> str | None:
    """The instant an answer's data is complete to; none while history is still replayed
    (events acknowledged long ago may not be counted yet)."""
    if not row.backfill_done or instant_us is None:
        return None
    return format_time(from_micros(instant_us))


async def group_complete_to(request: Request, session: Any) -> int | None:
    group = request.app.state.api.settings.aggregator_group_id
    return (await read_freshness(session, group)).complete_to_us


async def kept_report(
    request: Request,
    row: repository.FunnelRow,
    from_: str | None,
    to: str | None,
    mode: CountMode,
    chosen: Breakdown | None,
    *,
    fresh: bool = False,
    last_days: int | None = None,
) -> Served:
    """The funnel's report over this range: from the report cache while it is exact (or young
    enough to be served stale while one recomputation runs), else computed now (``fresh``:
    always). Reports, charts, plans and diagnoses of the same range share kept reports.
    ``last_days`` sets how far back a range without ``from`` reaches (default: the setting).

    The freshness instant is read before what it describes: before the change stamp (a kept
    exact report then holds everything acknowledged before it), and inside a computation
    before its reads (shared by identical requests, so each carries its own instant)."""
    state = request.app.state.api
    definition = definition_from_doc(row.definition)
    days = last_days or state.settings.default_range_days
    start, end, window = report_range(request, from_, to, days)
    async with sessions(request)() as session:
        now_complete = await group_complete_to(request, session)
        stamp = await repository.change_stamp(session, row.id)
    key = (row.id, row.version, from_, to, mode, chosen, days)
    basis = (row.backfill_done, row.backfill_persons, stamp)
    rolling = days * DAY_US if from_ is None else None

    async def work() -> Computed:
        began = time.perf_counter()
        async with sessions(request)() as session:
            complete = await group_complete_to(request, session)
            result = await compute_report(session, row.id, definition, window, mode, chosen)
            until = await valid_until(
                session, row.id, definition, window, open_end=to is None, rolling=rolling
            )
        took = int((time.perf_counter() - began) * 1_000_000)
        return Computed(start, end, result, window.now, until, basis, took, complete)

    kept = None if fresh else state.reports.get(key, basis, now_us())
    if kept is None:
        computed: Computed = await state.reports.compute(key, work)
        return Served(computed, "computed", computed.complete_to_us)
    if kept[1] == "stale":
        state.reports.refresh(key, work)
        return Served(kept[0], "stale", kept[0].complete_to_us)
    return Served(kept[0], "exact", now_complete)


def report_range(
    request: Request, from_: str | None, to: str | None, default_days: int | None = None
) -> tuple[datetime, datetime, Window]:
    settings = request.app.state.api.settings
    start, end = bounded_range(
        from_,
        to,
        now=datetime.now(UTC),
        default_days=default_days or settings.default_range_days,
        max_days=settings.max_range_days,
    )
    return start, end, Window(to_micros(start), to_micros(end), now_us())


async def project_persons(request: Request, project_id: str) -> int:
    """How many persons the project has, the total a running backfill walks: counted at most
    every ``PERSONS_TTL_S`` per API process (the count reads every stored event of the
    project: 1.1 s at 1,000,000 persons, too much to pay on every report read)."""
    state = request.app.state.api
    kept = state.persons.get(project_id)
    if kept is not None and time.monotonic() - kept[1] < PERSONS_TTL_S:
        return int(kept[0])
    async with sessions(request)() as session:
        persons = await repository.project_persons(session, project_id)
    state.persons[project_id] = (persons, time.monotonic())
    return persons
