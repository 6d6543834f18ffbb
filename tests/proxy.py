"""An HTTP proxy in front of a service, for tests: it forwards every request, logs each one
with its answer, and can answer the next POSTs 503 itself (an injected outage)."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import orjson
import uvicorn

from services.devstack import free_port

# Hop-by-hop, or recomputed by the server that sends the answer on.
_DROPPED = {b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive"}
OUTAGE = {"detail": [{"field": "(body)", "reason": "injected outage; retry later"}]}


class Proxy:
    """``http://127.0.0.1:{port}`` forwards to ``target``; ``GET /__log`` lists what passed."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.port = free_port()
        self.log: list[dict[str, Any]] = []
        self.fail_posts = 0  # the next this many POSTs are answered 503 without forwarding
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Proxy:
        config = uvicorn.Config(
            self._app, host="127.0.0.1", port=self.port, log_level="warning", interface="asgi3"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        while not self._server.started:
            threading.Event().wait(0.05)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/__log":
            await _answer(
                send, 200, [(b"access-control-allow-origin", b"*")], orjson.dumps(self.log)
            )
            return
        entry: dict[str, Any] = {
            "method": scope["method"],
            "path": scope["path"],
            "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
            "body": body.decode(errors="replace"),
        }
        self.log.append(entry)
        if scope["method"] == "POST" and self.fail_posts > 0:
            self.fail_posts -= 1
            entry["status"], entry["injected"] = 503, True
            cors = [(b"access-control-allow-origin", b"*"), (b"retry-after", b"1")]
            await _answer(send, 503, cors, orjson.dumps(OUTAGE))
            return
        status, headers, content = await self._forward(scope, body)
        entry["status"] = status
        await _answer(send, status, headers, content)

    async def _forward(self, scope: dict[str, Any], body: bytes) -> tuple[int, Any, bytes]:
        headers = [(k, v) for k, v in scope["headers"] if k not in _DROPPED]
        url = f"{self.target}{scope['path']}"
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode()
        async with httpx.AsyncClient(timeout=60) as client:
            r = await client.request(scope["method"], url, headers=headers, content=body)
        kept = [
            (k.encode(), v.encode()) for k, v in r.headers.items() if k.encode() not in _DROPPED
        ]
        return r.status_code, kept, r.content


async def _answer(send: Any, status: int, headers: Any, body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
