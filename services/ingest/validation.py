"""Validation of incoming events into canonical events, with errors that name the field."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from uuid_utils.compat import uuid7

from shared.events import MAX_DEPTH, CanonicalEvent, format_time, unstorable

FUTURE_LIMIT = timedelta(hours=24)
MIN_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2200, 1, 1, tzinfo=UTC)


def _instant(value: Any) -> Any:
    """RFC 3339 with an offset, or epoch milliseconds."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("must be an RFC 3339 string or epoch milliseconds")
    if isinstance(value, int | float):
        try:
            ts = datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError("epoch milliseconds out of range") from exc
    elif isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError("must be RFC 3339, for example 2026-11-22T10:00:00Z") from exc
        if ts.tzinfo is None:
            raise ValueError("needs a UTC offset, for example 2026-11-22T10:00:00Z")
    else:
        raise ValueError("must be an RFC 3339 string or epoch milliseconds")
    if not MIN_TIME <= ts < MAX_TIME:
        raise ValueError("must lie between the years 2000 and 2200")
    return ts.astimezone(UTC)


INSTANT_SCHEMA = {
    "anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}, {"type": "null"}],
    "description": "RFC 3339 with a UTC offset, or epoch milliseconds; default: when received.",
}
Instant = Annotated[datetime | None, BeforeValidator(_instant), WithJsonSchema(INSTANT_SCHEMA)]
Id = Annotated[str, Field(min_length=1, max_length=256)]


class EventIn(BaseModel):
    """One event as clients post it to ``/v1/events``."""

    model_config = ConfigDict(
        extra="ignore",
        strict=True,
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"type": "string"}}}
                for name in ("user_id", "anonymous_id")
            ]
        },
    )

    event_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    user_id: Id | None = None
    anonymous_id: Id | None = None
    event: Annotated[str, Field(min_length=1, max_length=200)]
    timestamp: Instant = None
    sent_at: Instant = None
    properties: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_person(self) -> EventIn:
        if self.user_id is None and self.anonymous_id is None:
            raise ValueError("user_id or anonymous_id is required")
        return self


@dataclass(frozen=True, slots=True)
class Problem:
    """Why one event of a request was refused."""

    index: int
    field: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "reason": self.reason}


def validate(raw: Any, index: int) -> tuple[EventIn | None, list[Problem]]:
    """The event's fields checked; whether it can be stored, its age and the size of its
    properties are checked by :func:`encode`."""
    if not isinstance(raw, dict):
        return None, [Problem(index, "(event)", "must be a JSON object")]
    try:
        event = EventIn.model_validate(raw)
    except ValidationError as exc:
        return None, [_problem(index, e) for e in exc.errors(include_url=False)]
    return event, []


@dataclass(frozen=True, slots=True)
class Limits:
    """What :func:`encode` refuses: properties over a size, instants before the horizon."""

    max_properties_bytes: int
    oldest: datetime  # see shared.retention.ingest_horizon
    retention_days: int


def encode(
    event: EventIn, index: int, project_id: str, received_at: datetime, limits: Limits
) -> tuple[CanonicalEvent, bytes] | Problem:
    """The canonical event and its record value, or why it is too old, cannot be stored, or
    its properties are too large.

    Serializing is the dearest step of ingest's own work, so the record's bytes are what is
    looked at first: the fields are searched one by one for a NUL only when the record holds
    one (orjson writes it as an escape), and for deep nesting only when the record holds that
    many brackets; the properties are measured apart only when the whole value is over the
    limit (a value within it cannot hold larger properties).
    """
    canonical = canonicalize(event, project_id, received_at)
    if canonical.timestamp < limits.oldest:
        return Problem(
            index,
            "timestamp",
            f"is older than the retention period (RETENTION_DAYS={limits.retention_days}):"
            f" events before {format_time(limits.oldest)} are not accepted",
        )
    try:
        value = canonical.to_json()
    except TypeError:  # nested past what orjson writes (254 levels)
        return _unstorable(event, index) or Problem(index, "(event)", "cannot be serialized")
    if _NUL in value or value.count(b"{") + value.count(b"[") > MAX_DEPTH:
        found = _unstorable(event, index)
        if found is not None:
            return found
    max_properties_bytes = limits.max_properties_bytes
    if len(value) > max_properties_bytes:
        size = len(orjson.dumps(event.properties))
        if size > max_properties_bytes:
            return Problem(
                index, "properties", f"is {size} bytes serialized; at most {max_properties_bytes}"
            )
    return canonical, value


_NUL = b"\\u0000"  # U+0000 as orjson writes it in a string
TEXT_FIELDS = ("event_id", "user_id", "anonymous_id", "event")


def _unstorable(event: EventIn, index: int) -> Problem | None:
    """Which field cannot be stored as it is (see ``shared.events.unstorable``), if any."""
    for name in TEXT_FIELDS:
        text = getattr(event, name)
        if text is not None and "\x00" in text:
            return Problem(index, name, "must not contain the NUL character (U+0000)")
    for name in ("properties", "context"):
        found = unstorable(getattr(event, name), name)
        if found is not None:
            return Problem(index, *found)
    return None


def _problem(index: int, error: Any) -> Problem:
    loc = ".".join(str(part) for part in error["loc"]) or "(event)"
    return Problem(index, loc, str(error["msg"]).removeprefix("Value error, "))


def canonicalize(event: EventIn, project_id: str, received_at: datetime) -> CanonicalEvent:
    """Apply defaults and clock-skew correction: ``received_at - (sent_at - timestamp)``."""
    flags: list[str] = []
    ts = event.timestamp or received_at
    if event.timestamp is not None and event.sent_at is not None:
        ts = received_at - (event.sent_at - event.timestamp)
        flags.append("skew_corrected")
    if ts > received_at + FUTURE_LIMIT:
        ts = received_at
        flags.append("future_timestamp_replaced")
    return CanonicalEvent(
        project_id=project_id,
        event_id=event.event_id or str(uuid7()),
        person_id=event.user_id or event.anonymous_id or "",
        user_id=event.user_id,
        anonymous_id=event.anonymous_id,
        event=event.event,
        timestamp=ts,
        received_at=received_at,
        sent_at=event.sent_at,
        properties=event.properties,
        context=event.context,
        flags=tuple(flags),
    )
