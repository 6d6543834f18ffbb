"""The retention horizon: which events are too old to keep, for ingest and aggregator alike.

The aggregator expires events before :func:`retention_horizon` (midnight UTC, the retention's
days ago). Ingest refuses events before :func:`ingest_horizon`, one day later, so that an
aggregator lagging less than a day behind never expires an event that ingest acknowledged.
"""

from __future__ import annotations

from datetime import datetime

from shared.clock import DAY_US, now_us
from shared.events import from_micros

# How far behind an aggregator may be without expiring an event that ingest accepted.
AGGREGATOR_LAG_ALLOWED_US = DAY_US


def retention_horizon(retention_days: int, now: int | None = None) -> int:
    """Events before this instant (µs) are expired: midnight UTC, ``retention_days`` ago."""
    today = (now_us() if now is None else now) // DAY_US
    return (today - retention_days) * DAY_US


def ingest_horizon(retention_days: int, now: int | None = None) -> datetime:
    """The oldest instant ingest accepts: the horizon an aggregator will have a day from now."""
    return from_micros(retention_horizon(retention_days, now) + AGGREGATOR_LAG_ALLOWED_US)
