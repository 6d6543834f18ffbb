"""Every metric the API exports: funnel gauges refreshed in the background from stored progress.

A scrape only reads these gauges; the refresher recomputes them at most every
``API_GAUGE_REFRESH_S`` seconds over the entries of the last ``API_GAUGE_RANGE_DAYS`` days.
A funnel step is identified by project, funnel id and step position (1-based), so that two
steps on the same event, or two funnels of the same name, are separate series; the funnel's
and the step's names ride along as labels for legends (one value per series, at most 200
characters each, as the API accepts them). Never a person.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from services.api.replica import Replica
from services.api.reports.computation import compute_report, replica_for, row_key, valid_until
from services.api.reports.python import FunnelReport, Window
from services.api.repository import Session, Sessions, funnels, progress
from services.api.repository.funnels import FunnelRow
from shared.clock import DAY_US, Clock, SystemClock
from shared.funnel import FunnelDefinition, definition_from_doc

log = logging.getLogger(__name__)
LABELS = ["project", "funnel_id", "step", "funnel_name", "step_name"]

STEP_PERSONS = Gauge("funnel_step_persons", "Persons who reached the step.", LABELS)
STEP_IN_PROGRESS = Gauge(
    "funnel_step_in_progress", "Persons at the step whose window is still open.", LABELS
)
STEP_CONVERSION = Gauge(
    "funnel_step_conversion_ratio", "Persons at the step over persons at step 1.", LABELS
)
REFRESH_SECONDS = Histogram(
    "funnel_api_step_refresh_duration_seconds", "Time to recompute every funnel_step_* series."
)
REPORT_SECONDS = Histogram(
    "funnel_api_report_duration_seconds", "Time to answer a report request.", ["kind"]
)
REPORTS = Counter(
    "funnel_api_reports_total",
    "Report answers by freshness: computed, exact from the cache, or stale from the cache.",
    ["freshness"],
)
_GAUGES = (STEP_PERSONS, STEP_IN_PROGRESS, STEP_CONVERSION)

# Label values known in advance start at 0, so that a panel shows 0 rather than no data.
for _freshness in ("computed", "exact", "stale"):
    REPORTS.labels(_freshness)
REPORT_SECONDS.labels("report")


@dataclass(frozen=True, slots=True)
class Kept:
    """One funnel's gauge values, exact while its basis is unchanged and until ``until_us``."""

    basis: Hashable
    until_us: int
    steps: tuple[tuple[str, int, int], ...]  # name, persons, in progress


async def refresh_gauges(
    sessions: Sessions,
    range_days: int,
    kept: dict[str, Kept] | None = None,
    clock: Clock | None = None,
    replica: Replica | None = None,
) -> None:
    """Set every funnel's gauges over the entries of the last ``range_days`` days.

    A funnel's values are computed as a report is (from the columnar ``replica`` when it
    holds the funnel's version, else inside PostgreSQL, not by fetching its entries) and,
    with ``kept``, only when they may have changed: when the aggregator changed the funnel's
    stored progress or its definition changed, or when the clock reaches the first instant
    at which an entry closes its window or leaves the range. The replica catches up with the
    progress log after the change stamp of the basis is read, so what it counts is at least
    as new as the basis says, as the database's answer is.
    """
    now = (clock or SystemClock()).now_us()
    range_us = range_days * DAY_US
    window = Window(now - range_us, now, now)
    kept = {} if kept is None else kept
    seen: set[tuple[str, ...]] = set()
    with REFRESH_SECONDS.time():
        async with sessions() as session:
            rows = await funnels.all_funnels(session)
            for gone in kept.keys() - {row.id for row in rows}:
                del kept[gone]
            for row in rows:
                stamp = await progress.change_stamp(session, row.id)
                basis = (row.version, row.backfill_done, row.backfill_persons, stamp)
                found = kept.get(row.id)
                if found is None or found.basis != basis or now >= found.until_us:
                    found = await _compute(session, row, window, basis, range_us, replica)
                    kept[row.id] = found
                first = found.steps[0][1]
                for position, (name, persons, in_progress) in enumerate(found.steps, 1):
                    labels = (row.project_id, row.id, str(position), row.name, name)
                    seen.add(labels)
                    STEP_PERSONS.labels(*labels).set(persons)
                    STEP_IN_PROGRESS.labels(*labels).set(in_progress)
                    STEP_CONVERSION.labels(*labels).set(persons / first if first else 0)
    _forget_all_but(seen)


async def _compute(
    session: Session,
    row: FunnelRow,
    window: Window,
    basis: Hashable,
    range_us: int,
    replica: Replica | None,
) -> Kept:
    definition = definition_from_doc(row.definition)
    report = await _report(session, row, definition, window, replica)
    until = await valid_until(session, row.id, definition, window, open_end=True, rolling=range_us)
    return Kept(basis, until, tuple((s.name, s.persons, s.in_progress) for s in report.steps))


async def _report(
    session: Session,
    row: FunnelRow,
    definition: FunnelDefinition,
    window: Window,
    replica: Replica | None,
) -> FunnelReport:
    chosen = replica_for(replica, row_key(row), definition, "uniques")
    if chosen is not None:
        # No transaction is held while the replica reads in sessions of its own (on SQLite
        # each holds the write lock); the next statement of this session begins another.
        await session.commit()
        found = await chosen.report(row.id, row.version, definition, window, "uniques", None)
        if found is not None:
            return found[0]
    return await compute_report(
        session, (row.project_id, row.id), definition, window, "uniques", None
    )


def _forget_all_but(seen: set[tuple[str, ...]]) -> None:
    """Drop the series of deleted or renamed funnels and steps."""
    for gauge in _GAUGES:
        known: Any = gauge._metrics  # prometheus-client keeps label values here
        for labels in list(known):
            if labels not in seen:
                gauge.remove(*labels)


async def refresh_forever(
    sessions: Sessions,
    range_days: int,
    every_s: float,
    clock: Clock | None = None,
    replica: Replica | None = None,
) -> None:
    kept: dict[str, Kept] = {}
    while True:
        started = time.monotonic()
        try:
            await refresh_gauges(sessions, range_days, kept, clock, replica)
        except Exception:  # keep serving the last values; the next round may work
            log.exception("gauge refresh failed")
        # A refresh that takes long (much data) is spaced out so that it never hogs the API.
        await asyncio.sleep(max(every_s, 2 * (time.monotonic() - started)))
