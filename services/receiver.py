"""``funnel receive``: a development webhook receiver that verifies Standard Webhooks signatures
and prints each delivery, one JSON line per request."""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def handler_for(secret: str) -> type[BaseHTTPRequestHandler]:
    webhook = Webhook(secret)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                payload = webhook.verify(body, dict(self.headers.items()))
            except WebhookVerificationError as exc:
                self._answer(401, {"verified": False, "reason": str(exc)})
                return
            self._answer(200, {"verified": True, "id": self.headers["webhook-id"], **payload})

        def _answer(self, status: int, line: dict[str, Any]) -> None:
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass  # the printed line says it all

    return Handler


def receive(host: str, port: int, secret: str) -> int:
    """Serve until interrupted; 200 for a verified delivery, 401 for any other request."""
    server = HTTPServer((host, port), handler_for(secret))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
