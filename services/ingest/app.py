"""The ingest HTTP service: validate, publish to Kafka, answer 202 only once acknowledged."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response

from services.ingest import metrics, openapi, refusals, segment
from services.ingest.acceptance import IngestState, Refused, accept
from services.ingest.body import read_json
from services.ingest.keys import DatabaseKeyStore, KeyStore, KeysUnavailable
from services.ingest.publisher import KafkaPublisher, Publisher
from services.ingest.ratelimit import RateLimiter
from services.ingest.refusals import RequestError, answer, refuse
from services.ingest.settings import IngestSettings
from services.ingest.shedding import Shedder, SheddingMiddleware
from services.ingest.validation import EventIn
from shared.db import create_engine, sessionmaker
from shared.docs import offline_docs_app
from shared.errors import ErrorBody
from shared.metrics_route import add_metrics_route

__all__ = ["RequestError", "create_app"]


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
    add_metrics_route(app)
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
            messages = _batch(body)
            raw = [_segment_event(m, None, sent_at) for m in messages]
        else:
            messages = [body]
            raw = [_segment_event(body, kind, None)]
        answer = await accept(state, project, raw, segment.FIELD_NAMES, messages)
        if answer.status_code == 202:
            answer.status_code = 200  # what Segment's API answers
        return answer


async def sdk_settings(request: Request, write_key: str) -> Response:
    """analytics.js's settings, pointing it at this host, for a known write key."""
    state: IngestState = request.app.state.ingest
    try:
        project = await state.keys.project_for(write_key)
    except KeysUnavailable:
        refuse(503, "write_key", "write keys cannot be checked now", {"Retry-After": "5"})
    if project is None:
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


def _segment_event(message: Any, kind: str | None, sent_at: Any) -> Any:
    try:
        return segment.to_event(message, kind, sent_at)
    except segment.ShapeError as exc:
        return Refused(exc.field, str(exc))


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
