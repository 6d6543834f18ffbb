"""``/metrics`` as a route of an HTTP service's app (a mounted app answers it with a redirect)."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder


def add_metrics_route(app: FastAPI) -> None:
    """Serve this process's metrics at ``/metrics``, in the format the scraper accepts."""

    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(REGISTRY), media_type=content_type)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
