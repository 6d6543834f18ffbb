"""The webhook HTTP adapter: one POST to a checked address, its status and a truncated body.

Every connection the sender opens resolves the host once (:func:`shared.netguard.resolve`),
checks every address, and connects to one of those addresses; the URL keeps the host name,
so the Host header, TLS SNI and certificate verification use the name, and pooled
connections are only reused for the same scheme, host and port. Redirects are never
followed (httpcore has none).
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpcore

from shared.netguard import (
    Network,
    Resolver,
    Target,
    Unresolvable,
    UnsafeUrl,
    parse_url,
    resolve,
    system_resolver,
)

BODY_BYTES = 1024  # of the receiver's answer kept in the attempt log
RETRY_AFTER_MAX_S = 86_400.0  # the whole retry schedule is about a day
_FAILURES = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    OSError,
    TimeoutError,
)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None  # None: no HTTP answer (connection refused, timeout, refused URL, ...)
    retry_after_s: float | None
    body: str
    error: str | None
    seconds: float
    refused: bool = False  # the URL may not be called: nothing was sent, retrying is useless


class Sender(Protocol):
    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Answer: ...

    async def close(self) -> None: ...


class HttpSender:
    """Posts with a pool whose every connection goes to an address netguard allowed."""

    def __init__(
        self,
        timeout_s: float = 15.0,
        max_connections: int = 64,
        *,
        allowed_networks: Sequence[Network] = (),
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=max_connections,
            # A pooled connection was checked when it was opened; expiring idle ones soon
            # bounds how long an attempt may reuse one instead of looking the name up again.
            keepalive_expiry=5.0,
            network_backend=CheckedBackend(tuple(allowed_networks), resolver),
        )

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Answer:
        started = time.perf_counter()
        try:
            target = parse_url(url)
            async with asyncio.timeout(self._timeout_s):
                status, retry_after, text = await self._exchange(target, headers, body)
        except Unresolvable as exc:  # DNS may answer on a later attempt
            return Answer(None, None, "", _clean(str(exc)), time.perf_counter() - started)
        except UnsafeUrl as exc:
            return Answer(None, None, "", str(exc), time.perf_counter() - started, refused=True)
        except _FAILURES as exc:
            why = str(exc) or f"no complete answer within {self._timeout_s:g} s"
            error = _clean(f"{type(exc).__name__}: {why}")
            return Answer(None, None, "", error, time.perf_counter() - started)
        return Answer(status, retry_after, text, None, time.perf_counter() - started)

    async def _exchange(
        self, target: Target, headers: dict[str, str], body: bytes
    ) -> tuple[int, float | None, str]:
        url = httpcore.URL(
            scheme=target.scheme, host=target.host, port=target.port, target=target.target
        )
        own = [(k, v) for k, v in headers.items() if k.lower() != "host"]
        sent = [("host", target.authority), *own]
        phases = dict.fromkeys(("connect", "read", "write", "pool"), self._timeout_s)
        async with self._pool.stream(
            "POST", url, headers=sent, content=body, extensions={"timeout": phases}
        ) as response:
            head = b""
            async for chunk in response.aiter_stream():
                head += chunk
                if len(head) >= BODY_BYTES:
                    break
        retry_after = _retry_after(_header(response.headers, b"retry-after"))
        return response.status, retry_after, _clean(head[:BODY_BYTES].decode("utf-8", "replace"))

    async def close(self) -> None:
        await self._pool.aclose()


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the host's checked addresses only; the name itself is never dialled."""

    def __init__(self, allowed: tuple[Network, ...], resolver: Resolver) -> None:
        self._allowed = allowed
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve(host, port, self._allowed, self._resolver)
        failures = []
        for address in addresses:  # in the resolver's order, as getaddrinfo callers do
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failures.append(f"{address}: {exc or type(exc).__name__}")
        raise httpcore.ConnectError(f"{host} port {port}: " + "; ".join(failures))

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeUrl("url: unix sockets are not webhook targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _clean(text: str) -> str:
    """Text a receiver chose, made storable: PostgreSQL text cannot hold NUL."""
    return text.replace("\x00", "\N{REPLACEMENT CHARACTER}")


def _retry_after(value: str | None) -> float | None:
    """Seconds the receiver asks to wait, within [0, a day]; None for dates and nonsense."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # HTTP dates are rare from webhook receivers; the schedule applies
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S) if math.isfinite(seconds) else None
