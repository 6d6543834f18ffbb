"""Bounds on what a request may ask for, checked before any work is done."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit

from services.api.errors import refuse
from services.api.reports.python import Attribution, Breakdown
from shared.funnel import FunnelDefinition

# Instants a range may start or end at: far enough from the calendar's ends that a range's
# defaults, windows and local-time cohorts never leave what datetime can hold.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
MAX_COHORTS = 1000
# C0 and C1 control characters and DEL: not part of any name a person types.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_ID = 100


def parse_instant(name: str, text: str | None, default: datetime) -> datetime:
    """RFC 3339 (with offset) or a plain date (midnight UTC), between EARLIEST and LATEST."""
    if text is None:
        return default
    try:
        if len(text) == 10:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        else:
            parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            refuse(400, name, "needs a UTC offset, for example 2026-11-22T00:00:00Z")
        parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        refuse(400, name, "not an RFC 3339 time or a YYYY-MM-DD date")
    if not EARLIEST <= parsed <= LATEST:
        refuse(400, name, f"must lie between {EARLIEST.date()} and {LATEST.date()}")
    return parsed


def bounded_range(
    from_: str | None, to: str | None, *, now: datetime, default_days: int, max_days: int
) -> tuple[datetime, datetime]:
    """The range [from, to): ``to`` defaults to now, ``from`` to ``default_days`` before it."""
    end = parse_instant("to", to, min(now, LATEST))
    start = parse_instant("from", from_, max(EARLIEST, end - timedelta(days=default_days)))
    if start > end:
        refuse(400, "from", "must not be after to")
    if end - start > timedelta(days=max_days):
        refuse(400, "from", f"the range may span at most {max_days:,} days; narrow it")
    return start, end


def cohort_count(start: datetime, end: datetime, interval: str) -> int:
    """At least as many cohorts as the range has of ``interval``, counted without making them
    (a bucket starts at the local midnight or month start before ``start``)."""
    days = (end - start).days + 2
    if interval == "day":
        return days + 1
    if interval == "week":
        return days // 7 + 2
    return (end.year - start.year) * 12 + end.month - start.month + 2


def check_cohorts(start: datetime, end: datetime, interval: str) -> None:
    if cohort_count(start, end, interval) > MAX_COHORTS:
        refuse(400, "interval", f"more than {MAX_COHORTS:,} cohorts; widen it or narrow the range")


def well_formed_id(value: str) -> bool:
    """Whether ``value`` can be the id of anything stored (ids are generated UUIDs)."""
    return 0 < len(value) <= MAX_ID and _CONTROL.search(value) is None


def printable(value: str) -> str:
    """A name without control characters (pydantic validator)."""
    if _CONTROL.search(value) is not None:
        raise ValueError("must not contain control characters (U+0000-U+001F, U+007F-U+009F)")
    return value


def parsable_url(value: str) -> str:
    """A URL that parses, with a port in range (pydantic validator)."""
    printable(value)
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError when out of range or not a number
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from exc
    return value


def choose_breakdown(
    definition: FunnelDefinition, prop: str, attribution: Attribution, step: int, limit: int
) -> Breakdown:
    """The breakdown asked for, by any event property (the funnel's declared ones are
    answered from stored progress, others from raw events), if its step exists (else 400)."""
    if not prop.strip() or _CONTROL.search(prop) is not None:
        refuse(400, "breakdown", "must name an event property (no control characters)")
    if step > len(definition.steps):
        refuse(400, "step", f"the funnel has {len(definition.steps)} steps")
    return Breakdown(prop, attribution, step, limit)
