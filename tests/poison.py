"""Records no aggregator may choke on, each with what its dead letter's reason must say, and
odd records that are valid and must be counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from shared.events import CanonicalEvent

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"x": [value]}
    return value


def _event(person: str, name: str, n: int, project: str) -> dict[str, Any]:
    ts = T0 + timedelta(minutes=n)
    doc: dict[str, Any] = orjson.loads(
        CanonicalEvent(
            project_id=project,
            event_id=f"{person}-{n}",
            person_id=person,
            user_id=person,
            event=name,
            timestamp=ts,
            received_at=ts,
            properties={"channel": "ads"},
        ).to_json()
    )
    return doc


def _changed(n: int, project: str, **fields: Any) -> bytes:
    """A step-1 event of a person of its own, with ``fields`` replaced (None: removed)."""
    doc = _event(f"poison-{n}", "a", n, project)
    for name, value in fields.items():
        if value is None:
            doc.pop(name)
        else:
            doc[name] = value
    return orjson.dumps(doc)


def poison_records(project: str) -> list[tuple[str, bytes | None, str]]:
    """(what it is, the record's value, a fragment of the dead letter's reason)."""
    c = _changed
    return [
        ("NUL in the event name", c(1, project, event="a\x00b"), "event: must not contain"),
        ("NUL in the person id", c(2, project, person_id="p\x00"), "person_id: must not"),
        ("NUL in the event id", c(3, project, event_id="e\x00"), "event_id: must not"),
        ("NUL in the user id", c(4, project, user_id="u\x00"), "user_id: must not"),
        (
            "NUL in a breakdown property's value",
            c(5, project, properties={"channel": "ads\x00"}),
            "properties.channel: must not contain",
        ),
        (
            "NUL in a property key",
            c(6, project, properties={"chan\x00nel": "ads"}),
            "key must not contain",
        ),
        (
            "NUL deep in the context",
            c(7, project, context={"page": {"title": ["ok", "\x00"]}}),
            "context.page.title.1: must not contain",
        ),
        ("an event id of 129 characters", c(8, project, event_id="e" * 129), "longer than 128"),
        ("a person id of 257 characters", c(9, project, person_id="p" * 257), "longer than 256"),
        ("an event name of 201 characters", c(10, project, event="a" * 201), "longer than 200"),
        ("a project id of 65 characters", c(11, project, project_id="j" * 65), "longer than 64"),
        ("properties nested 40 levels", c(12, project, properties=_deep(40)), "nests deeper"),
        ("context nested 40 levels", c(13, project, context=_deep(40)), "nests deeper"),
        ("not JSON", b"\x00\x01\x02 binary, say Avro", "not JSON"),
        ("invalid UTF-8", b'{"v": 1, "event": "\xff\xfe"}', "not JSON"),
        ("a lone surrogate", b'{"v": 1, "event": "\\ud800"}', "not JSON"),
        ("a JSON array", b"[1, 2, 3]", "not a JSON object"),
        ("another schema version", c(14, project, v=2), "unsupported schema version"),
        ("no event name", c(15, project, event=None), "event: required"),
        ("an empty person id", c(16, project, person_id=""), "person_id: must be a non-empty"),
        ("a number as person id", c(17, project, person_id=12), "person_id: must be a non-empty"),
        ("a tombstone (no value)", None, "record has no value"),
        ("year 9999", c(18, project, timestamp="9999-12-31T23:59:59Z"), "must be before"),
        ("before year 1 in UTC", c(19, project, timestamp="0001-01-01T00:00:00+01:00"), "time"),
        ("epoch milliseconds", c(20, project, timestamp=1767225600000), "RFC 3339"),
        ("no UTC offset", c(21, project, timestamp="2026-01-05T00:00:00"), "no UTC offset"),
        ("flags not a list", c(22, project, flags="abc"), "flags: must be a list"),
        ("properties a list", c(23, project, properties=[1]), "properties: must be an object"),
        (
            "a foreign producer's Segment-shaped event",
            orjson.dumps({"type": "track", "event": "a", "userId": "u"}),
            "unsupported schema version",
        ),
        (
            "older than the retention horizon",
            c(24, project, timestamp="2020-01-01T00:00:00Z"),
            "expired: older than the retention horizon",
        ),
    ]


def odd_but_valid(project: str) -> list[bytes]:
    """Events that look hostile but can be stored as they are: these are counted."""
    docs = [
        _event("odd-1", "a", 1, project) | {"properties": {"channel": "x", "n": 2**64 - 1}},
        _event("odd-2", "a", 2, project) | {"properties": {"channel": "y", "n": "2**70"}},
        _event("odd-3", "a", 3, project) | {"properties": {"channel": "x", "n": -(2**63)}},
        _event("odd-4", "a", 4, project) | {"properties": {"channel": "köp 🛒 \u200b"}},
        _event("p" * 256, "a", 5, project) | {"event_id": "e" * 128},
        _event("odd-6 ☃", "a", 6, project) | {"properties": {"channel": "z" * 20_000}},
        _event("odd-7", "a", 7, project) | {"properties": {"channel": "x", "deep": _deep(15)}},
        _event("odd-8", "a", 8, project) | {"properties": {"channel": "\\u0000 as text"}},
        _event("odd-9", "a", 9, project) | {"context": {"note": "\t\r\n\u0001\u001f"}},
    ]
    # Beyond 64 bits: JSON allows it, orjson reads it as a float (and refuses to write it).
    return [orjson.dumps(d).replace(b'"2**70"', str(2**70).encode()) for d in docs]


def valid_event(person: str, name: str, n: int, project: str, channel: str) -> bytes:
    return orjson.dumps(_event(person, name, n, project) | {"properties": {"channel": channel}})
