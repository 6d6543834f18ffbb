"""uvicorn's httptools protocol with what it lacks against slow clients: a header deadline.

uvicorn closes a connection idle between requests (``timeout_keep_alive``), but holds one
whose request headers arrive slowly, or never, for as long as the client likes, and with
httptools buffers headers without a size limit (``h11_max_incomplete_event_size`` applies to
h11 only). Here a request's headers must be complete within ``header_timeout_s`` of its first
byte (or of the connection's opening) and within ``max_header_bytes``; otherwise the
connection is answered 408 or 431 and closed. Bodies have their own deadline in
``services/ingest/body.py``.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.ingest.settings import IngestSettings
from shared.errors import error_body

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self, *args: Any, header_timeout_s: float, max_header_bytes: int, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._max_header_bytes = max_header_bytes
        self._header_timer: asyncio.TimerHandle | None = None
        self._awaiting_headers = True
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_done()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # may complete the headers (on_headers_complete)
        if self._awaiting_headers and not self.transport.is_closing():
            # Counted per read, so a read that completes the headers is never counted: what
            # is held without complete headers stays within the limit plus one read.
            self._header_bytes += len(data)
            if self._header_bytes > self._max_header_bytes:
                self._refuse(431, f"larger than {self._max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_headers()

    def on_headers_complete(self) -> None:
        self._headers_done()
        super().on_headers_complete()

    def _await_headers(self) -> None:
        self._awaiting_headers = True
        self._header_bytes = 0
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self._header_timeout_s, self._too_slow)

    def _headers_done(self) -> None:
        self._awaiting_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self.transport.is_closing():
            self._refuse(408, f"not received within {self._header_timeout_s:g} s")

    def _refuse(self, status: int, reason: str) -> None:
        self._headers_done()
        body = orjson.dumps(error_body("(headers)", reason))
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, _REASONS[status], len(body))
        )
        self.transport.write(head + body)
        self.transport.close()


def uvicorn_options(settings: IngestSettings) -> dict[str, Any]:
    """The arguments of ``uvicorn.run`` that bound what slow or idle clients hold."""
    return {
        "http": partial(
            GuardedHttpToolsProtocol,
            header_timeout_s=settings.header_timeout_s,
            max_header_bytes=settings.max_header_bytes,
        ),
        "timeout_keep_alive": settings.keep_alive_s,
        # Only for http="h11"; the protocol above enforces the same on httptools.
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }
