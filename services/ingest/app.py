"""The ingest HTTP service: validate, publish to Kafka, answer 202 only once acknowledged."""

from __future__ import annotations

import base64
import binascii
import math
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response

from services.ingest import metrics, segment
from services.ingest.keys import DatabaseKeyStore, KeyStore, KeysUnavailable
from services.ingest.publisher import KafkaPublisher, Overloaded, Publisher, Record, Unavailable
from services.ingest.ratelimit import RateLimiter
from services.ingest.settings import IngestSettings
from services.ingest.validation import Problem, encode, validate
from shared.db import create_engine, sessionmaker
from shared.docs import offline_docs_app
from shared.events import (
    EVENTS_TOPIC,
    REJECTED_TOPIC,
    SCHEMA_HEADER,
    SCHEMA_VERSION,
    format_time,
)
from shared.metrics_route import add_metrics_route


class RequestError(Exception):
    """A request-level refusal: status, message, optional headers."""

    def __init__(self, status: int, message: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class IngestState:
    settings: IngestSettings
    publisher: Publisher
    keys: KeyStore
    limiter: RateLimiter


def create_app(
    settings: IngestSettings,
    *,
    publisher: Publisher | None = None,
    keys: KeyStore | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = None
        key_store = keys
        if key_store is None:
            engine = create_engine(settings.database_url)
            key_store = DatabaseKeyStore(sessionmaker(engine), settings.key_cache_s)
        pub = publisher or KafkaPublisher(
            settings.kafka_bootstrap_servers, settings.produce_timeout_s
        )
        app.state.ingest = IngestState(
            settings, pub, key_store, RateLimiter(settings.rate_limit_per_key)
        )
        try:
            yield
        finally:
            await pub.close()
            if engine is not None:
                await engine.dispose()

    app = offline_docs_app(title="Funnel Tracker ingest", version="1", lifespan=lifespan)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()],
        allow_methods=["POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
    )
    add_metrics_route(app)

    @app.exception_handler(RequestError)
    async def _refused(_request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, exc.status, headers=exc.headers)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_api_route("/v1/events", post_events, methods=["POST"], status_code=202)
    for kind in (*segment.KINDS, "batch"):
        app.add_api_route(f"/v1/{kind}", post_segment, methods=["POST"], name=f"segment_{kind}")
    return app


def app_from_environment() -> FastAPI:
    """The app configured from the environment: uvicorn's factory for worker processes."""
    return create_app(IngestSettings())


async def post_events(request: Request) -> Response:
    """One event, or ``{"batch": [...]}``; answered 202 once Kafka acknowledged them."""
    state: IngestState = request.app.state.ingest
    with metrics.IN_FLIGHT.track_inprogress(), metrics.REQUEST_SECONDS.labels("events").time():
        body = await read_json(request, state.settings.max_body_bytes)
        project = await authenticate(state, request, body)
        batch = body.get("batch") if isinstance(body, dict) and "batch" in body else [body]
        if not isinstance(batch, list):
            raise RequestError(400, [Problem(0, "batch", "must be a list").as_dict()])
        return await accept(state, project, batch)


async def post_segment(request: Request) -> Response:
    """Segment tracking API: ``/v1/track``, ``/v1/page``, … and ``/v1/batch``; 200 when accepted."""
    state: IngestState = request.app.state.ingest
    kind = request.url.path.rsplit("/", 1)[-1]
    with metrics.IN_FLIGHT.track_inprogress(), metrics.REQUEST_SECONDS.labels("segment").time():
        body = await read_json(request, state.settings.max_body_bytes)
        project = await authenticate(state, request, body)
        if kind == "batch":
            batch = body.get("batch") if isinstance(body, dict) else None
            if not isinstance(batch, list):
                raise RequestError(400, [Problem(0, "batch", "must be a list").as_dict()])
            raw = [_segment_event(m, None, body.get("sentAt")) for m in batch]
        else:
            raw = [_segment_event(body, kind, None)]
        answer = await accept(state, project, raw, segment.FIELD_NAMES)
        if answer.status_code == 202:
            answer.status_code = 200  # what Segment's API answers
        return answer


class _Refused:
    """A message refused before validation (a Segment shape error), kept to report it."""

    def __init__(self, field: str, reason: str, raw: Any) -> None:
        self.field, self.reason, self.raw = field, reason, raw


def _segment_event(message: Any, kind: str | None, sent_at: Any) -> Any:
    try:
        return segment.to_event(message, kind, sent_at)
    except segment.ShapeError as exc:
        return _Refused(exc.field, str(exc), message)


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON: ``application/json`` or ``text/plain`` (what sendBeacon sends)."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media not in ("application/json", "text/plain", ""):
        raise RequestError(
            415, f"content-type: {media} is not accepted; send application/json or text/plain"
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body: larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body: larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if request.headers.get("content-encoding", "").lower() == "gzip":
        body = _gunzip(body, limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"body: malformed JSON ({exc})") from exc


def _gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing one that inflates past the body limit."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise RequestError(400, f"body: not valid gzip ({exc})") from exc
    if len(plain) > limit:
        raise RequestError(413, f"body: larger than {limit} bytes once decompressed")
    return plain


def presented_key(request: Request, body: Any) -> str | None:
    """Write key from HTTP basic (user name), a bearer token, or ``writeKey`` in the body."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value, validate=True).decode().partition(":")[0] or None
        except (binascii.Error, UnicodeDecodeError):
            return None
    if scheme.lower() == "bearer":
        return value.strip() or None
    if isinstance(body, dict) and isinstance(body.get("writeKey"), str):
        return str(body["writeKey"]) or None
    return None


async def authenticate(state: IngestState, request: Request, body: Any) -> str:
    key = presented_key(request, body)
    if key is None:
        raise RequestError(401, "authorization: a write key is required", _challenge())
    try:
        project = await state.keys.project_for(key)
    except KeysUnavailable:
        raise RequestError(
            503, "authorization: write keys cannot be checked now", {"Retry-After": "5"}
        ) from None
    if project is None:
        raise RequestError(401, "authorization: unknown or revoked write key", _challenge())
    return project


def _challenge() -> dict[str, str]:
    return {"WWW-Authenticate": 'Basic realm="funnel-ingest"'}


async def accept(
    state: IngestState,
    project: str,
    batch: Sequence[Any],
    field_names: dict[str, str] | None = None,
) -> Response:
    settings = state.settings
    if len(batch) > settings.max_batch_events:
        raise RequestError(413, f"batch: more than {settings.max_batch_events} events")
    wait = state.limiter.retry_after(project, len(batch))
    if wait:
        _count("overloaded", "rate_limited", len(batch))
        raise RequestError(429, "rate limit exceeded", {"Retry-After": str(math.ceil(wait))})
    received = datetime.now(UTC)
    event_ids: list[str] = []
    records: list[Record] = []
    problems: list[Problem] = []
    rejected: list[Record] = []
    for index, raw in enumerate(batch):
        if isinstance(raw, _Refused):
            event, found = None, [Problem(index, raw.field, raw.reason)]
            raw = raw.raw
        else:
            event, found = validate(raw, index)
            found = [_renamed(p, field_names) for p in found]
        if event is not None:
            encoded = encode(
                event, index, project, received, max_properties_bytes=settings.max_properties_bytes
            )
            if isinstance(encoded, Problem):
                found = [encoded]
            else:
                canonical, value = encoded
                event_ids.append(canonical.event_id)
                records.append(Record(EVENTS_TOPIC, canonical.key, value, EVENT_HEADERS))
                continue
        problems.extend(found)
        rejected.append(_rejected_record(project, raw, found, received))
    await _publish(state, records + rejected, len(records))
    _count("rejected", "invalid", len(rejected))
    if not records:
        return JSONResponse({"detail": [p.as_dict() for p in problems]}, 400)
    body = {
        "accepted": len(records),
        "event_ids": event_ids,
        "rejected": [p.as_dict() for p in problems],
    }
    return Response(orjson.dumps(body), 202, media_type="application/json")


async def _publish(state: IngestState, records: list[Record], accepted: int) -> None:
    started = time.perf_counter()
    try:
        await state.publisher.publish(records)
    except Unavailable as exc:
        _count("unavailable", "broker", len(records))
        raise RequestError(503, f"broker: {exc}; retry later", {"Retry-After": "5"}) from exc
    except Overloaded as exc:
        _count("overloaded", "buffer_full", len(records))
        raise RequestError(429, f"producer: {exc}; retry later", {"Retry-After": "1"}) from exc
    metrics.PRODUCE_SECONDS.observe(time.perf_counter() - started)
    _count("accepted", "", accepted)


EVENT_HEADERS = ((SCHEMA_HEADER, str(SCHEMA_VERSION).encode()),)


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
    value = orjson.dumps(doc, default=str)
    return Record(REJECTED_TOPIC, project.encode(), value)
