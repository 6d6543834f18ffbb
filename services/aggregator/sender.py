"""The webhook HTTP adapter: one POST, its status, headers and a truncated body."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import httpx


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None  # None: no HTTP answer (connection refused, timeout, ...)
    retry_after_s: float | None
    body: str
    error: str | None
    seconds: float


class Sender(Protocol):
    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Answer: ...

    async def close(self) -> None: ...


class HttpxSender:
    def __init__(self, timeout_s: float = 15.0, max_connections: int = 64) -> None:
        self._client = httpx.AsyncClient(
            timeout=timeout_s,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=max_connections),
        )

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Answer:
        started = time.perf_counter()
        try:
            r = await self._client.post(url, headers=headers, content=body)
        except httpx.HTTPError as exc:
            return Answer(
                None, None, "", f"{type(exc).__name__}: {exc}", time.perf_counter() - started
            )
        return Answer(
            r.status_code,
            _retry_after(r.headers.get("retry-after")),
            r.text[:1024],
            None,
            time.perf_counter() - started,
        )

    async def close(self) -> None:
        await self._client.aclose()


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None  # HTTP dates are rare from webhook receivers; the schedule applies
