"""Every metric the API exports: funnel gauges refreshed in the background from stored progress.

A scrape only reads these gauges; the refresher recomputes them at most every
``API_GAUGE_REFRESH_S`` seconds over the entries of the last ``API_GAUGE_RANGE_DAYS`` days.
Labels are bounded: project, funnel name and step name, never a person.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api import repository
from services.api.report import Window, funnel_report
from shared.funnel import US, definition_from_doc
from shared.keys import now_us

log = logging.getLogger(__name__)
LABELS = ["project", "funnel", "step"]

STEP_PERSONS = Gauge("funnel_step_persons", "Persons who reached the step.", LABELS)
STEP_IN_PROGRESS = Gauge(
    "funnel_step_in_progress", "Persons at the step whose window is still open.", LABELS
)
STEP_CONVERSION = Gauge(
    "funnel_step_conversion_ratio", "Persons at the step over persons at step 1.", LABELS
)
REFRESH_SECONDS = Histogram(
    "funnel_api_gauge_refresh_duration_seconds", "Time to recompute every funnel gauge."
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


async def refresh_gauges(sessions: async_sessionmaker[AsyncSession], range_days: int) -> None:
    now = now_us()
    window = Window(now - range_days * 86_400 * US, now, now)
    seen: set[tuple[str, ...]] = set()
    with REFRESH_SECONDS.time():
        async with sessions() as session:
            for row in await repository.all_funnels(session):
                entries = await repository.entries_in_range(
                    session, row.id, window.start, window.end
                )
                report = await asyncio.to_thread(
                    funnel_report, definition_from_doc(row.definition), entries, window
                )
                first = report.steps[0].persons
                for s in report.steps:
                    labels = (row.project_id, row.name, s.name)
                    seen.add(labels)
                    STEP_PERSONS.labels(*labels).set(s.persons)
                    STEP_IN_PROGRESS.labels(*labels).set(s.in_progress)
                    STEP_CONVERSION.labels(*labels).set(s.persons / first if first else 0)
    _forget_all_but(seen)


def _forget_all_but(seen: set[tuple[str, ...]]) -> None:
    """Drop the series of deleted or renamed funnels and steps."""
    for gauge in _GAUGES:
        known: Any = gauge._metrics  # prometheus-client keeps label values here
        for labels in list(known):
            if labels not in seen:
                gauge.remove(*labels)


async def refresh_forever(
    sessions: async_sessionmaker[AsyncSession], range_days: int, every_s: float
) -> None:
    while True:
        started = time.monotonic()
        try:
            await refresh_gauges(sessions, range_days)
        except Exception:  # keep serving the last values; the next round may work
            log.exception("gauge refresh failed")
        # A refresh that takes long (much data) is spaced out so that it never hogs the API.
        await asyncio.sleep(max(every_s, 2 * (time.monotonic() - started)))
