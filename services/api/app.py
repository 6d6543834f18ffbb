"""The query API: funnels as resources and their reports."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api import (
    admin_routes,
    analysis_routes,
    chart_routes,
    errors,
    freshness_routes,
    funnels_routes,
    metrics,
    share_routes,
    webhooks_routes,
)
from services.api.report_cache import ReportCache
from services.api.response_models import Health
from services.api.settings import ApiSettings
from shared.db import create_engine, sessionmaker
from shared.docs import offline_docs_app
from shared.metrics_route import add_metrics_route


@dataclass
class ApiState:
    settings: ApiSettings
    sessions: async_sessionmaker[AsyncSession]
    reports: ReportCache
    # Persons per project (a backfill's total) and when they were counted (monotonic s).
    persons: dict[str, tuple[int, float]] = field(default_factory=dict)


def create_app(
    settings: ApiSettings, *, sessions: async_sessionmaker[AsyncSession] | None = None
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = None
        makers = sessions
        if makers is None:
            engine = create_engine(settings.database_url)
            makers = sessionmaker(engine)
        reports = ReportCache(
            settings.report_cache_size,
            max_stale_us=int(settings.report_max_stale_s * 1_000_000),
            slow_us=int(settings.report_stale_after_ms * 1_000),
        )
        app.state.api = ApiState(settings, makers, reports)
        refresher = asyncio.create_task(
            metrics.refresh_forever(makers, settings.gauge_range_days, settings.gauge_refresh_s)
        )
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await reports.close()
            if engine is not None:
                await engine.dispose()

    app = offline_docs_app(
        title="Funnel Tracker API",
        version="1",
        lifespan=lifespan,
        description="Funnels as resources, reports, trends, forecasts, plans, charts and share "
        "links; projects and keys; the aggregator's freshness.",
    )
    errors.install(app, settings.max_body_bytes)
    add_metrics_route(app)
    app.include_router(analysis_routes.router)
    app.include_router(funnels_routes.router)
    app.include_router(webhooks_routes.router)
    app.include_router(chart_routes.router)
    app.include_router(share_routes.router)
    app.include_router(admin_routes.router)
    app.include_router(freshness_routes.router)

    @app.get("/healthz", response_model=Health)
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    return app
