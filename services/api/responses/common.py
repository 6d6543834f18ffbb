"""What every answer is made of: the loose base model, a funnel's reference, instants."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from services.api.repository.funnels import FunnelRow
from shared.events import format_time, from_micros


class Out(BaseModel):
    model_config = ConfigDict(extra="allow", validate_by_name=True, validate_by_alias=True)


COMPLETE_TO = (
    "Every event ingest acknowledged before this instant is counted in this answer (null: not "
    "known yet, or the funnel's history is still being replayed). See /v1/freshness."
)


class FunnelRef(Out):
    id: str
    name: str


class Health(Out):
    status: str


def instant(us: int) -> str:
    """A stored instant (µs) as answers show it."""
    return format_time(from_micros(us))


def shown(us: int | None) -> str | None:
    """A stored instant (µs) as answers show it; ``None`` stays ``null``."""
    return None if us is None else instant(us)


def funnel_ref(row: FunnelRow) -> FunnelRef:
    return FunnelRef(id=row.id, name=row.name)


def complete_to(instant_us: int | None, row: FunnelRow) -> str | None:
    """The instant an answer's data is complete to; none while history is still replayed
    (events acknowledged long ago may not be counted yet)."""
    if not row.backfill_done or instant_us is None:
        return None
    return shown(instant_us)
