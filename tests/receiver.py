"""A real webhook receiver on 127.0.0.1 that verifies every signature with `standardwebhooks`."""

from __future__ import annotations

import json
import ssl
import threading
from collections import Counter
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class Receiver:
    """Answers ``status`` (200 by default); records verified deliveries by webhook id.

    ``host`` is the loopback address to listen on; with ``tls`` (a server context) it speaks
    HTTPS and records the server name (SNI) each handshake asked for.
    """

    def __init__(
        self, secret: str = "", *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
    ) -> None:
        self.secret = secret
        self.host = host
        self.tls = tls
        self.status = 200
        self.answer_body = b"ok"
        self.answer_headers: dict[str, str] = {}
        self.received: list[dict[str, Any]] = []
        self.host_headers: list[str] = []
        self.server_names: list[str | None] = []
        self.bad_signatures = 0
        self.calls = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver._handle(self, body)

            def log_message(self, *_args: Any) -> None:
                pass

        ThreadingHTTPServer.request_queue_size = 128  # concurrent senders connect at once
        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        if self.tls is not None:
            self.tls.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
            # A failed handshake fails accept(), which socketserver ignores (an OSError).
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Go down: the port refuses connections until start() is called again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        with self._lock:
            self.calls += 1
            status = self.status
            headers = {k.lower(): v for k, v in handler.headers.items()}
            self.host_headers.append(headers.get("host", ""))
            try:
                Webhook(self.secret).verify(body, headers)
            except WebhookVerificationError:
                self.bad_signatures += 1
                status = 400
            else:
                if 200 <= status < 300:
                    self.received.append({"id": headers["webhook-id"], **json.loads(body)})
        handler.send_response(status)
        for name, value in self.answer_headers.items():
            handler.send_header(name, value)
        handler.send_header("content-length", str(len(self.answer_body)))
        handler.end_headers()
        handler.wfile.write(self.answer_body)

    def unique(self) -> dict[str, dict[str, Any]]:
        """What a receiver deduplicating by webhook id keeps."""
        return {r["id"]: r for r in self.received}

    def duplicates(self) -> int:
        return sum(n - 1 for n in Counter(r["id"] for r in self.received).values())


class ScriptedResolver:
    """Answers name lookups from a script, cycling through it; records every lookup."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append((host, port))
        return self.answers[(len(self.asked) - 1) % len(self.answers)]
