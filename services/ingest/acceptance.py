"""Accepting events: validate each, publish the valid ones and keep the refused ones with
their reasons, and answer only once Kafka acknowledged them all."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi.responses import Response

from services.ingest import metrics
from services.ingest.keys import KeyStore
from services.ingest.publisher import Overloaded, Publisher, Record, Unavailable
from services.ingest.ratelimit import RateLimiter
from services.ingest.refusals import answer, refuse
from services.ingest.settings import IngestSettings
from services.ingest.validation import Limits, Problem, encode, validate
from shared.events import (
    EVENTS_TOPIC,
    REJECTED_TOPIC,
    SCHEMA_HEADER,
    SCHEMA_VERSION,
    format_time,
)
from shared.retention import ingest_horizon


@dataclass
class IngestState:
    settings: IngestSettings
    publisher: Publisher
    keys: KeyStore
    limiter: RateLimiter


class Refused:
    """A message refused before validation (a Segment shape error), kept to report it."""

    def __init__(self, field: str, reason: str) -> None:
        self.field, self.reason = field, reason


async def accept(
    state: IngestState,
    project: str,
    batch: Sequence[Any],
    field_names: dict[str, str] | None = None,
    sent: Sequence[Any] | None = None,
) -> Response:
    """Validate and publish ``batch``; a refused event is kept as ``sent`` (what the client
    sent, when ``batch`` holds it converted) on the rejected-events topic."""
    settings = state.settings
    if len(batch) > settings.max_batch_events:
        refuse(413, "batch", f"more than {settings.max_batch_events} events")
    wait = state.limiter.retry_after(project, len(batch))
    if wait:
        _count("overloaded", "rate_limited", len(batch))
        refuse(429, "(body)", "rate limit exceeded", {"Retry-After": str(math.ceil(wait))})
    limits = Limits(
        settings.max_properties_bytes,
        ingest_horizon(settings.retention_days),
        settings.retention_days,
    )
    sorted_ = _Sorted(project, datetime.now(UTC))
    for index, raw in enumerate(batch):
        if index and not index % YIELD_EVERY:
            await asyncio.sleep(0)  # let the loop answer others (and shed) during a big batch
        sorted_.add(index, raw, sent[index] if sent is not None else raw, limits, field_names)
    await _publish(state, sorted_.records + sorted_.rejected, len(sorted_.records))
    _count("rejected", "invalid", len(sorted_.rejected))
    problems = [p.as_dict() for p in sorted_.problems]
    if not sorted_.records:
        return answer(400, {"detail": problems})
    body = {"accepted": len(sorted_.records), "event_ids": sorted_.event_ids, "rejected": problems}
    return answer(202, body)


@dataclass
class _Sorted:
    """A request's events so far: records of the valid ones, and why the others were refused."""

    project: str
    received: datetime
    event_ids: list[str] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rejected: list[Record] = field(default_factory=list)

    def add(
        self, index: int, raw: Any, sent: Any, limits: Limits, names: dict[str, str] | None
    ) -> None:
        if isinstance(raw, Refused):
            event, found = None, [Problem(index, raw.field, raw.reason)]
        else:
            event, found = validate(raw, index)
            found = [_renamed(p, names) for p in found]
        if event is not None:
            encoded = encode(event, index, self.project, self.received, limits)
            if not isinstance(encoded, Problem):
                canonical, value = encoded
                self.event_ids.append(canonical.event_id)
                self.records.append(Record(EVENTS_TOPIC, canonical.key, value, EVENT_HEADERS))
                return
            found = [_renamed(encoded, names)]
        self.problems.extend(found)
        self.rejected.append(_rejected_record(self.project, sent, found, self.received))


async def _publish(state: IngestState, records: list[Record], accepted: int) -> None:
    started = time.perf_counter()
    try:
        await state.publisher.publish(records)
    except Unavailable as exc:
        _count("unavailable", "broker", len(records))
        refuse(503, "(body)", f"broker: {exc}; retry later", {"Retry-After": "5"})
    except Overloaded as exc:
        _count("overloaded", "buffer_full", len(records))
        refuse(429, "(body)", f"producer: {exc}; retry later", {"Retry-After": "1"})
    metrics.PRODUCE_SECONDS.observe(time.perf_counter() - started)
    _count("accepted", "", accepted)


EVENT_HEADERS = ((SCHEMA_HEADER, str(SCHEMA_VERSION).encode()),)
YIELD_EVERY = 250  # events validated between turns of the event loop


def _renamed(problem: Problem, names: dict[str, str] | None) -> Problem:
    if not names:
        return problem
    head, dot, rest = problem.field.partition(".")
    return Problem(problem.index, names.get(head, head) + dot + rest, problem.reason)


def _count(outcome: str, reason: str, n: int) -> None:
    if n:
        metrics.EVENTS.labels(outcome, reason).inc(n)


def _rejected_record(
    project: str, raw: Any, problems: Sequence[Problem], received: datetime
) -> Record:
    doc = {
        "project_id": project,
        "received_at": format_time(received),
        "errors": [p.as_dict() for p in problems],
        "event": raw,
    }
    try:
        value = orjson.dumps(doc, default=str)
    except TypeError:  # nested past what orjson writes (254 levels): kept cut short
        value = orjson.dumps({**doc, "event": _cut(raw, CUT_DEPTH)}, default=str)
    return Record(REJECTED_TOPIC, project.encode(), value)


CUT_DEPTH = 200


def _cut(value: Any, depth: int) -> Any:
    """``value`` with what nests deeper than ``depth`` levels replaced by a note."""
    if not isinstance(value, dict | list):
        return value
    if depth == 0:
        return f"(cut: nested deeper than {CUT_DEPTH} levels)"
    if isinstance(value, dict):
        return {k: _cut(v, depth - 1) for k, v in value.items()}
    return [_cut(v, depth - 1) for v in value]
