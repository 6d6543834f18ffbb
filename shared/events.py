"""The event wire contract between ingest and aggregator (topic ``funnel.events``).

A record's key is ``project_id/person_id`` so that all events of one person land on one
partition, in the order ingest published them. Its value is the canonical event as JSON;
the header ``schema-version`` carries :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.clock import US

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
        """Decode a record's value, or raise :class:`WireError` naming the field.

        Whoever produced the record, the event that comes out can be stored on SQLite and
        PostgreSQL: ids and name within their columns' lengths, no NUL anywhere (see
        :func:`unstorable`), times within the calendar's reach of every instant derived
        from them. orjson already refuses invalid UTF-8 and lone surrogates.
        """
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise WireError(f"value is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise WireError("value is not a JSON object")
        if doc.get("v") != SCHEMA_VERSION:
            raise WireError(f"v: unsupported schema version {_shown(doc.get('v'))}")
        try:
            event = cls(
                project_id=_text(doc, "project_id"),
                event_id=_text(doc, "event_id"),
                person_id=_text(doc, "person_id"),
                user_id=_optional_text(doc, "user_id"),
                anonymous_id=_optional_text(doc, "anonymous_id"),
                event=_text(doc, "event"),
                timestamp=_instant(doc, "timestamp"),
                received_at=_instant(doc, "received_at"),
                sent_at=_instant(doc, "sent_at") if doc.get("sent_at") else None,
                properties=_object(doc, "properties"),
                context=_object(doc, "context"),
                flags=_flags(doc),
            )
        except WireError:
            raise
        except KeyError as exc:
            raise WireError(f"{_shown(exc.args[0])}: required") from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise WireError(_shown(str(exc))) from exc
        if _may_be_unstorable(raw):
            for name in ("properties", "context"):
                found = unstorable(getattr(event, name), name)
                if found is not None:
                    raise WireError(f"{found[0]}: {found[1]}")
        return event


# The longest text each field may hold: the columns' lengths (characters, as PostgreSQL's
# VARCHAR counts them).
MAX_LENGTHS = {
    "project_id": 64,
    "event_id": 128,
    "person_id": 256,
    "user_id": 256,
    "anonymous_id": 256,
    "event": 200,
}
# Instants from here on are refused: windows and re-marketing offsets (at most a year or two)
# added to them must stay within the calendar (year 9999), where they are formatted.
MAX_TIME = datetime(9000, 1, 1, tzinfo=UTC)


def record_key(project_id: str, person_id: str) -> bytes:
    return f"{project_id}/{person_id}".encode()


def partition_for(key: bytes, partitions: Sequence[int]) -> int:
    """The partition of a record key: CRC-32 of the key over the topic's partitions.

    Stable across processes and restarts, so a person's events share a partition, which is
    what divides the aggregators' work (and decides which aggregator owns a person, see
    services/aggregator/linking.py). Chosen rather than kafka-python's default partitioner:
    its murmur2 is pure Python and cost a quarter of each send.
    """
    return partitions[zlib.crc32(key) % len(partitions)]


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
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


def from_micros(us: int) -> datetime:
    return datetime.fromtimestamp(us // US, UTC).replace(microsecond=us % US)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _text(doc: dict[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str) or not value:
        raise WireError(f"{name}: must be a non-empty string")
    return _storable_text(name, value)


def _optional_text(doc: dict[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise WireError(f"{name}: must be a string or null")
    return _storable_text(name, value)


def _storable_text(name: str, value: str) -> str:
    if len(value) > MAX_LENGTHS[name]:
        raise WireError(f"{name}: longer than {MAX_LENGTHS[name]} characters")
    if "\x00" in value:
        raise WireError(f"{name}: must not contain the NUL character (U+0000)")
    return value


def _instant(doc: dict[str, Any], name: str) -> datetime:
    value = doc[name]
    if not isinstance(value, str):
        raise WireError(f"{name}: must be an RFC 3339 string")
    try:
        ts = parse_time(value)
    except (ValueError, OverflowError) as exc:
        raise WireError(f"{name}: {_shown(str(exc))}") from exc
    if ts >= MAX_TIME:
        raise WireError(f"{name}: must be before {format_time(MAX_TIME)}")
    return ts


def _object(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name) or {}
    if not isinstance(value, dict):
        raise WireError(f"{name}: must be an object")
    return value


def _flags(doc: dict[str, Any]) -> tuple[str, ...]:
    value = doc.get("flags") or []
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise WireError("flags: must be a list of strings")
    return tuple(value)


def _may_be_unstorable(raw: bytes) -> bool:
    """False when no value in ``raw`` can hold a NUL (JSON spells it only as an escape) or
    nest past :data:`MAX_DEPTH` (too few brackets): most records skip the walk."""
    return b"\\u0000" in raw or raw.count(b"{") + raw.count(b"[") > MAX_DEPTH


def _shown(value: Any) -> str:
    """A value as a reason may quote it: short, printable, storable."""
    text = value if isinstance(value, str) else repr(value)
    return text[:200].encode("unicode_escape").decode("ascii")
