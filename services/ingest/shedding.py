"""Load shedding: a process takes on only so many requests and body bytes at once.

Beyond either bound a request is answered 429 with ``Retry-After`` at once, before its body
is read, instead of waiting in a queue that only grows: under a burst far above capacity,
latency stays that of the admitted requests, and memory stays bounded by what is admitted
(a body becomes several times its size in Python objects while it is validated), so it
returns near its baseline afterwards.
"""

from __future__ import annotations

from typing import Any

import orjson

from services.ingest import metrics
from shared.errors import error_body

Scope = dict[str, Any]
RETRY_AFTER_S = 1


class Shedder:
    """The requests and body bytes one process holds now, and its bounds on both."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self.requests = 0
        self.bytes = 0

    def admit(self, size: int) -> str | None:
        """Take a request of ``size`` body bytes, or say which bound refuses it."""
        if self.requests >= self.max_requests:
            return "in_flight"
        # One request is always admitted, however large its body (within the body limit).
        if self.bytes and self.bytes + size > self.max_bytes:
            return "body_bytes"
        self.requests += 1
        self.bytes += size
        return None

    def release(self, size: int) -> None:
        self.requests -= 1
        self.bytes -= size


REASONS = {
    "in_flight": "too many requests in flight in this ingest process (INGEST_MAX_IN_FLIGHT)",
    "body_bytes": "too many body bytes in flight in this ingest process "
    "(INGEST_MAX_BODY_BYTES_IN_FLIGHT)",
}


class SheddingMiddleware:
    """ASGI middleware: every POST passes :class:`Shedder` before the app sees it.

    A body's size is its ``Content-Length``; a chunked body counts as the largest allowed.
    """

    def __init__(self, app: Any, shedder: Shedder, max_body_bytes: int) -> None:
        self.app, self.shedder, self.max_body_bytes = app, shedder, max_body_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        size = min(_declared_length(scope) or self.max_body_bytes, self.max_body_bytes)
        refused = self.shedder.admit(size)
        if refused is not None:
            metrics.SHED.labels(refused).inc()
            await _too_many(send, REASONS[refused])
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.shedder.release(size)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _too_many(send: Any, reason: str) -> None:
    body = orjson.dumps(error_body("(body)", f"{reason}; retry after {RETRY_AFTER_S} s"))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_S).encode()),
        # The body is left unread: close rather than drain it.
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})
