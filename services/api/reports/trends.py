"""Conversion per entry cohort (a day, week or month in the funnel's time zone): pure."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from services.api.reports.python import FunnelReport, StepReport, Window, funnel_report
from shared.events import to_micros
from shared.funnel import CountMode, Entry, FunnelDefinition

Interval = Literal["day", "week", "month"]


@dataclass(frozen=True, slots=True)
class Cohort:
    start: datetime
    end: datetime
    complete: bool
    steps: tuple[StepReport, ...]


def cohort_bounds(
    start: datetime, end: datetime, interval: Interval, zone: ZoneInfo
) -> Iterator[tuple[datetime, datetime]]:
    """Consecutive [start, end) buckets in the zone's calendar covering [start, end)."""
    local = start.astimezone(zone)
    cursor = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "week":
        cursor -= timedelta(days=cursor.weekday())
    elif interval == "month":
        cursor = cursor.replace(day=1)
    while cursor < end:
        if interval == "day":
            nxt = (cursor + timedelta(days=1, hours=3)).replace(hour=0)
        elif interval == "week":
            nxt = (cursor + timedelta(days=7, hours=3)).replace(hour=0)
        else:
            year, month = divmod(cursor.month, 12)
            nxt = cursor.replace(year=cursor.year + year, month=month + 1)
        yield cursor.replace(tzinfo=zone), nxt.replace(tzinfo=zone)
        cursor = nxt


def cohorts(
    definition: FunnelDefinition,
    bounds: Sequence[tuple[datetime, datetime]],
    reports: Sequence[FunnelReport],
    now_us: int,
) -> list[Cohort]:
    """Conversion per entry cohort (one report per cohort's range); a cohort whose last
    window is still open is incomplete."""
    return [
        Cohort(start, end, to_micros(end) + definition.window_us <= now_us, report.steps)
        for (start, end), report in zip(bounds, reports, strict=True)
    ]


def cohort_reports_in_python(
    definition: FunnelDefinition,
    entries_by_person: Mapping[str, Sequence[Entry]],
    windows: Sequence[Window],
    count: CountMode,
) -> list[FunnelReport]:
    """One report per cohort range from the entries of their whole span."""
    reports = []
    for w in windows:
        selected = {
            person: [e for e in entries if w.start <= e.t0 < w.end]
            for person, entries in entries_by_person.items()
        }
        reports.append(funnel_report(definition, selected, w, count))
    return reports
