"""The query API: ``create_app`` and the lifespan that builds what the routes are given."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.api import errors, metrics
from services.api.deps import ApiState
from services.api.reports.engine import ReportEngine
from services.api.repository import Sessions
from services.api.responses.common import Health
from services.api.routes import ROUTERS
from services.api.settings import ApiSettings
from shared.clock import Clock, SystemClock
from shared.db import create_engine, sessionmaker
from shared.docs import offline_docs_app
from shared.metrics_route import add_metrics_route


@asynccontextmanager
async def running(
    settings: ApiSettings,
    sessions: Sessions | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[ApiState]:
    """The API's state while it runs: the database engine (unless ``sessions`` are given),
    the report engine and the gauges' refresher, stopped and disposed of on the way out."""
    engine = None
    if sessions is None:
        engine = create_engine(settings.database_url)
        sessions = sessionmaker(engine)
    clock = clock or SystemClock()
    state = ApiState(settings, sessions, ReportEngine(settings, sessions, clock), clock)
    refresher = asyncio.create_task(
        metrics.refresh_forever(
            sessions,
            settings.gauge_range_days,
            settings.gauge_refresh_s,
            clock,
            state.reports.replica,  # the gauges read the report engine's columnar replica
        )
    )
    try:
        yield state
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        await state.reports.close()
        if engine is not None:
            await engine.dispose()


def create_app(
    settings: ApiSettings,
    *,
    sessions: Sessions | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """The API app; ``sessions`` and ``clock`` replace the database and the system clock."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running(settings, sessions, clock) as state:
            app.state.api = state
            yield

    app = offline_docs_app(
        title="Funnel Tracker API",
        version="1",
        lifespan=lifespan,
        description="Funnels as resources, reports, trends, forecasts, plans, charts and share "
        "links; projects and keys; the aggregator's freshness.",
    )
    errors.install(app, settings.max_body_bytes)
    add_metrics_route(app)
    for router in ROUTERS:
        app.include_router(router)

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok")

    return app
