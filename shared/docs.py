"""OpenAPI docs pages that work offline: Swagger UI and ReDoc served by the service itself.

FastAPI's own ``/docs`` and ``/redoc`` load their scripts from a CDN, so they are blank
without one. The fastapi-offline package ships those assets (Swagger UI 5, ReDoc 2) and
serves them from the app, under :data:`ASSETS`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

ASSETS = "/docs-assets"


def offline_docs_app(**options: Any) -> FastAPI:
    """A FastAPI app (``options`` as for ``FastAPI``) with ``/docs`` and ``/redoc`` served
    offline; Swagger UI's online validator badge, which calls out, is off."""
    options.setdefault("swagger_ui_parameters", {"validatorUrl": None})
    return FastAPIOffline(static_url=ASSETS, **options)
