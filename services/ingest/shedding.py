"""Load shedding: a process takes on only so many requests and body bytes at once.

Beyond either bound a request is answered 429 with ``Retry-After`` at once, before its body
is read, instead of waiting in a queue that only grows: under a burst far above capacity,
latency stays that of the admitted requests, and memory stays bounded by what is admitted
(a body becomes several times its size in Python objects while it is validated), so it
returns near its baseline afterwards.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from services.ingest import memory, metrics
from shared.errors import error_body

Scope = dict[str, Any]
RETRY_AFTER_S = 1


class Shedder:
    """The requests and body bytes one process holds now, and its bounds on both."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self.requests = 0
        self.bytes = 0
        self.released = 0  # body bytes released since the memory was last given back

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

    def release(self, size: int) -> bool:
        """Let a request go; True when the process is idle after enough large bodies that
        their memory should be given back (see ``memory.py``)."""
        self.requests -= 1
        self.bytes -= size
        self.released += size
        if self.requests == 0 and self.released >= memory.TRIM_AFTER_BYTES:
            self.released = 0
            return True
        return False


REASONS = {
    "in_flight": "too many requests in flight in this ingest process (INGEST_MAX_IN_FLIGHT)",
    "body_bytes": "too many body bytes in flight in this ingest process "
    "(INGEST_MAX_BODY_BYTES_IN_FLIGHT)",
}


class SheddingMiddleware:
    """ASGI middleware: every POST passes :class:`Shedder` before the app sees it.

    A body's size is its ``Content-Length``; a chunked or compressed body counts as the
    largest allowed (it may become that large).
    """

    def __init__(self, app: Any, shedder: Shedder, max_body_bytes: int) -> None:
        self.app, self.shedder, self.max_body_bytes = app, shedder, max_body_bytes
        self._give_back: asyncio.TimerHandle | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        size = min(_body_size(scope) or self.max_body_bytes, self.max_body_bytes)
        refused = self.shedder.admit(size)
        if refused is not None:
            metrics.SHED.labels(refused).inc()
            await _too_many(send, REASONS[refused])
            return
        try:
            await self.app(scope, receive, send)
        finally:
            if self.shedder.release(size) and self._give_back is None:
                # A moment later: the producer frees a request's record batches on its own
                # thread once the broker acknowledged them, after the answer is sent.
                loop = asyncio.get_running_loop()
                self._give_back = loop.call_later(memory.GIVE_BACK_DELAY_S, self._trim)

    def _trim(self) -> None:
        self._give_back = None
        memory.give_back()


def _body_size(scope: Scope) -> int | None:
    """Its declared length; None when not declared or compressed."""
    declared = None
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            declared = int(value)
        elif name == b"content-encoding" and value.strip().lower() != b"identity":
            return None
    return declared


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
