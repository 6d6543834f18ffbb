"""The API's routes, one module per area; each route is thin: it checks what was asked,
calls the repositories and the report engine in the request's one session, and answers a
typed model. Helpers shared by several areas live outside this package."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.routes import (
    admin,
    freshness,
    funnels,
    persons,
    planning,
    reports,
    sharing,
    webhooks,
)

# In this order in the OpenAPI document.
ROUTERS: tuple[APIRouter, ...] = (
    funnels.templates,
    planning.router,
    funnels.router,
    reports.router,
    persons.router,
    webhooks.router,
    sharing.router,
    admin.router,
    freshness.router,
)
