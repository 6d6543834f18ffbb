"""A real webhook receiver on 127.0.0.1 that verifies every signature with `standardwebhooks`."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class Receiver:
    """Answers ``status`` (200 by default); records verified deliveries by webhook id."""

    def __init__(self, secret: str = "") -> None:
        self.secret = secret
        self.status = 200
        self.received: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.calls = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver._handle(self, body)

            def log_message(self, *_args: Any) -> None:
                pass

        ThreadingHTTPServer.request_queue_size = 128  # concurrent senders connect at once
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
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
            try:
                Webhook(self.secret).verify(body, headers)
            except WebhookVerificationError:
                self.bad_signatures += 1
                status = 400
            else:
                if 200 <= status < 300:
                    self.received.append({"id": headers["webhook-id"], **json.loads(body)})
        handler.send_response(status)
        handler.send_header("content-length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")

    def unique(self) -> dict[str, dict[str, Any]]:
        """What a receiver deduplicating by webhook id keeps."""
        return {r["id"]: r for r in self.received}

    def duplicates(self) -> int:
        return sum(n - 1 for n in Counter(r["id"] for r in self.received).values())
