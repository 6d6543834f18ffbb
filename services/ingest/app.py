"""The ingest HTTP service: validate, publish to Kafka, answer 202 only once acknowledged."""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from prometheus_client import make_asgi_app

from services.ingest import metrics, openapi, refusals, segment
from services.ingest.body import read_json
from services.ingest.keys import DatabaseKeyStore, KeyStore
from services.ingest.publisher import KafkaPublisher, Overloaded, Publisher, Record, Unavailable
from services.ingest.ratelimit import RateLimiter
from services.ingest.refusals import RequestError, answer, refuse
from services.ingest.settings import IngestSettings
from services.ingest.shedding import Shedder, SheddingMiddleware
from services.ingest.validation import EventIn, Limits, Problem, encode, validate
from shared.db import create_engine, sessionmaker
from shared.errors import ErrorBody
from shared.events import (
    EVENTS_TOPIC,
    REJECTED_TOPIC,
    SCHEMA_HEADER,
    SCHEMA_VERSION,
    format_time,
)
from shared.retention import ingest_horizon

__all__ = ["RequestError", "create_app"]


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

    app = FastAPI(title="Funnel Tracker ingest", version="1", lifespan=lifespan)
    shedder = Shedder(settings.max_in_flight, settings.max_body_bytes_in_flight)
    app.add_middleware(SheddingMiddleware, shedder=shedder, max_body_bytes=settings.max_body_bytes)
    # Outermost, so that refusals carry CORS headers too: a browser SDK must be able to
    # read a 429's status and Retry-After to back off.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()],
        allow_methods=["GET", "POST", "OPTIONS"],
        # Any header: analytics.js adds X-Retry-Count on retries, and site owners may add
        # their own (deliveryStrategy.config.headers). Keys are not cookies: no credentials.
        allow_headers=["*"],
        expose_headers=["Retry-After"],
        max_age=3600,
    )
    app.mount("/metrics", make_asgi_app())
    refusals.install(app)
    _routes(app)
    openapi.document(app)
    return app


def _routes(app: FastAPI) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    security: dict[str, Any] = {"security": [{"writeKey": []}, {"writeKeyBearer": []}]}
    app.add_api_route(
        "/v1/events",
        post_events,
        methods=["POST"],
        status_code=202,
        summary="One event, or a batch of them",
        responses=openapi.responses(202, "Accepted: every accepted event is in Kafka"),
        openapi_extra={**openapi.request_body(EventIn, openapi.EventBatch), **security},
    )
    for kind in (*segment.KINDS, "batch"):
        for path in (kind, kind[0]):  # /v1/t, /v1/p, ...: analytics.js's short paths
            app.add_api_route(
                f"/v1/{path}",
                post_segment,
                methods=["POST"],
                name=f"segment_{path}",
                summary=f"Segment {kind}" + (" (analytics.js)" if len(path) == 1 else ""),
                responses=openapi.responses(200, "Accepted: every accepted event is in Kafka"),
                openapi_extra={**openapi.request_body(openapi.BODIES[kind]), **security},
            )
    app.add_api_route(
        "/v1/projects/{write_key}/settings",
        sdk_settings,
        methods=["GET"],
        summary="Settings for analytics.js loaded by the snippet (analytics._cdn = this host)",
        responses={
            200: {"model": openapi.SegmentSettings, "description": "analytics.js settings"},
            404: {"model": ErrorBody, "description": "No such write key"},
            503: {"model": ErrorBody, "description": "Write keys cannot be looked up"},
        },
    )


def app_from_environment() -> FastAPI:
    """The app configured from the environment: uvicorn's factory for worker processes."""
    return create_app(IngestSettings())


async def post_events(request: Request) -> Response:
    """One event, or ``{"batch": [...]}``; answered 202 once Kafka acknowledged them."""
    state: IngestState = request.app.state.ingest
    with metrics.IN_FLIGHT.track_inprogress(), metrics.REQUEST_SECONDS.labels("events").time():
        body = await _read(state, request)
        project = await authenticate(state, request, body)
        batch = _batch(body) if isinstance(body, dict) and "batch" in body else [body]
        return await accept(state, project, batch)


async def post_segment(request: Request) -> Response:
    """Segment tracking API: ``/v1/track``, ``/v1/t``, … and ``/v1/batch``; 200 when accepted."""
    state: IngestState = request.app.state.ingest
    name = request.url.path.rsplit("/", 1)[-1]
    kind = "batch" if name in ("batch", "b") else segment.SHORT.get(name, name)
    with metrics.IN_FLIGHT.track_inprogress(), metrics.REQUEST_SECONDS.labels("segment").time():
        body = await _read(state, request)
        project = await authenticate(state, request, body)
        if kind == "batch":
            sent_at = body.get("sentAt") if isinstance(body, dict) else None
            raw = [_segment_event(m, None, sent_at) for m in _batch(body)]
        else:
            raw = [_segment_event(body, kind, None)]
        answer = await accept(state, project, raw, segment.FIELD_NAMES)
        if answer.status_code == 202:
            answer.status_code = 200  # what Segment's API answers
        return answer


async def sdk_settings(request: Request, write_key: str) -> Response:
    """analytics.js's settings, pointing it at this host, for a known write key."""
    state: IngestState = request.app.state.ingest
    if await state.keys.project_for(write_key) is None:
        refuse(404, "write_key", "unknown or revoked write key")
    host = f"{request.url.netloc}{request.url.path.split('/v1/projects/')[0]}/v1"
    return answer(200, segment.sdk_settings(write_key, host, request.url.scheme))


async def _read(state: IngestState, request: Request) -> Any:
    settings = state.settings
    return await read_json(request, settings.max_body_bytes, settings.body_timeout_s)


def _batch(body: Any) -> list[Any]:
    batch = body.get("batch") if isinstance(body, dict) else None
    if not isinstance(batch, list):
        refuse(400, "batch", "must be a list of events")
    if not batch:
        refuse(400, "batch", "must hold at least one event")
    return batch


class _Refused:
    """A message refused before validation (a Segment shape error), kept to report it."""

    def __init__(self, field: str, reason: str, raw: Any) -> None:
        self.field, self.reason, self.raw = field, reason, raw


def _segment_event(message: Any, kind: str | None, sent_at: Any) -> Any:
    try:
        return segment.to_event(message, kind, sent_at)
    except segment.ShapeError as exc:
        return _Refused(exc.field, str(exc), message)


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
    project = await state.keys.project_for(key)
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
        refuse(413, "batch", f"more than {settings.max_batch_events} events")
    wait = state.limiter.retry_after(project, len(batch))
    if wait:
        _count("overloaded", "rate_limited", len(batch))
        retry = math.ceil(wait)
        refuse(429, "(body)", "rate limit exceeded", {"Retry-After": str(retry)})
    received = datetime.now(UTC)
    limits = Limits(
        settings.max_properties_bytes,
        ingest_horizon(settings.retention_days),
        settings.retention_days,
    )
    event_ids: list[str] = []
    records: list[Record] = []
    problems: list[Problem] = []
    rejected: list[Record] = []
    for index, raw in enumerate(batch):
        if index and not index % YIELD_EVERY:
            await asyncio.sleep(0)  # let the loop answer others (and shed) during a big batch
        if isinstance(raw, _Refused):
            event, found = None, [Problem(index, raw.field, raw.reason)]
            raw = raw.raw
        else:
            event, found = validate(raw, index)
            found = [_renamed(p, field_names) for p in found]
        if event is not None:
            encoded = encode(event, index, project, received, limits)
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
        return answer(400, {"detail": [p.as_dict() for p in problems]})
    body = {
        "accepted": len(records),
        "event_ids": event_ids,
        "rejected": [p.as_dict() for p in problems],
    }
    return answer(202, body)


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
