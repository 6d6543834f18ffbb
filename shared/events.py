"""The event wire contract between ingest and aggregator (topic ``funnel.events``).

A record's key is ``project_id/person_id`` so that all events of one person land on one
partition, in the order ingest published them. Its value is the canonical event as JSON;
the header ``schema-version`` carries :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

SCHEMA_VERSION = 1
SCHEMA_HEADER = "schema-version"
EVENTS_TOPIC = "funnel.events"
REJECTED_TOPIC = "funnel.events.rejected"


class WireError(ValueError):
    """A record that cannot be decoded into a canonical event."""


# How deeply ``properties`` and ``context`` may nest (objects and arrays). orjson refuses to
# write past 254 levels, and nothing a tracking SDK sends comes near this.
MAX_DEPTH = 32


def unstorable(value: Any, path: str, depth: int = 0) -> tuple[str, str] | None:
    """Where and why a JSON value cannot be stored as it is on SQLite and PostgreSQL, or None.

    PostgreSQL's text and JSONB types cannot hold U+0000 in a string or an object key, so
    such a value is refused rather than altered; ``path`` names the field the client sent
    (``properties.a.0``). Nesting past :data:`MAX_DEPTH` is refused too.
    """
    if isinstance(value, str):
        return (path, "must not contain the NUL character (U+0000)") if "\x00" in value else None
    if isinstance(value, dict | list):
        if depth >= MAX_DEPTH:
            return path, f"nests deeper than {MAX_DEPTH} levels"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            inner = f"{path}.{key}"
            if isinstance(key, str) and "\x00" in key:
                return inner, "key must not contain the NUL character (U+0000)"
            found = unstorable(item, inner, depth + 1)
            if found is not None:
                return found
    return None


@dataclass(slots=True)
class CanonicalEvent:
    """One accepted event, as ingest publishes it and the aggregator stores it.

    Not frozen, though never changed after it is made: a frozen dataclass's ``__init__`` cost
    more than half of ingest's own work per event (each is made once per event on both sides).
    """

    project_id: str
    event_id: str
    person_id: str
    event: str
    timestamp: datetime
    received_at: datetime
    user_id: str | None = None
    anonymous_id: str | None = None
    sent_at: datetime | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    flags: tuple[str, ...] = ()

    @property
    def key(self) -> bytes:
        return record_key(self.project_id, self.person_id)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "project_id": self.project_id,
            "event_id": self.event_id,
            "person_id": self.person_id,
            "user_id": self.user_id,
            "anonymous_id": self.anonymous_id,
            "event": self.event,
            "timestamp": self.timestamp,
            "received_at": self.received_at,
            "sent_at": self.sent_at,
            "properties": self.properties,
            "context": self.context,
            "flags": list(self.flags),
        }
        return orjson.dumps(doc, option=orjson.OPT_UTC_Z)

    @classmethod
    def from_json(cls, raw: bytes) -> CanonicalEvent:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise WireError(f"value is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise WireError("value is not a JSON object")
        if doc.get("v") != SCHEMA_VERSION:
            raise WireError(f"v: unsupported schema version {doc.get('v')!r}")
        try:
            return cls(
                project_id=_text(doc, "project_id"),
                event_id=_text(doc, "event_id"),
                person_id=_text(doc, "person_id"),
                user_id=doc.get("user_id"),
                anonymous_id=doc.get("anonymous_id"),
                event=_text(doc, "event"),
                timestamp=parse_time(_text(doc, "timestamp")),
                received_at=parse_time(_text(doc, "received_at")),
                sent_at=parse_time(doc["sent_at"]) if doc.get("sent_at") else None,
                properties=_object(doc, "properties"),
                context=_object(doc, "context"),
                flags=tuple(doc.get("flags") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(str(exc)) from exc


def record_key(project_id: str, person_id: str) -> bytes:
    return f"{project_id}/{person_id}".encode()


def format_time(ts: datetime) -> str:
    """RFC 3339 in UTC with microseconds, the one form on the wire."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    ts = datetime.fromisoformat(text)
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return ts.astimezone(UTC)


def to_micros(ts: datetime) -> int:
    """Microseconds since the Unix epoch: how the database stores instants."""
    delta = ts.astimezone(UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _text(doc: dict[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str) or not value:
        raise WireError(f"{name}: must be a non-empty string")
    return value


def _object(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name) or {}
    if not isinstance(value, dict):
        raise WireError(f"{name}: must be an object")
    return value
