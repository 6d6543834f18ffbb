"""The Kafka adapter of ingest: publishes records and waits for the broker's acknowledgement.

``publish`` returns only once every record is acknowledged by all in-sync replicas
(``acks=all``); otherwise it raises, and the caller must not claim any of them was accepted.
A record that timed out may still be written later (the broker may have it): the aggregator's
deduplication by event id makes such a duplicate harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class Unavailable(Exception):
    """The broker did not acknowledge in time: the client should retry later (503)."""


class Overloaded(Exception):
    """The producer's buffer is full: the client should slow down (429)."""


class Publisher(Protocol):
    async def publish(self, records: Sequence[Record]) -> None: ...

    async def close(self) -> None: ...


class KafkaPublisher:
    """kafka-python producer (idempotent, acks=all), replaced after a timeout.

    A kafka-python idempotent producer can stay wedged after a delivery timeout, so a timeout
    retires the producer and the next request gets a fresh one.
    """

    def __init__(self, bootstrap_servers: str, timeout_s: float) -> None:
        self._bootstrap = bootstrap_servers
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._producer: Any = None

    def _current(self) -> Any:
        with self._lock:
            if self._producer is None:
                timeout_ms = int(self._timeout_s * 1000)
                self._producer = KafkaProducer(
                    bootstrap_servers=self._bootstrap,
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=2,
                    max_block_ms=min(timeout_ms, 2000),
                    request_timeout_ms=max(timeout_ms // 2, 1000),
                    delivery_timeout_ms=timeout_ms,
                    bootstrap_timeout_ms=timeout_ms,
                )
            return self._producer

    def _retire(self, producer: Any) -> None:
        with self._lock:
            if self._producer is producer:
                self._producer = None
        threading.Thread(target=producer.close, kwargs={"timeout": 0}, daemon=True).start()

    async def publish(self, records: Sequence[Record]) -> None:
        if not records:
            return
        loop = asyncio.get_running_loop()
        try:
            producer = await asyncio.to_thread(self._current)
        except KafkaError as exc:
            raise Unavailable(f"broker unreachable: {exc}") from exc
        try:
            waiting = await asyncio.to_thread(self._send_all, producer, records, loop)
        except KafkaTimeoutError as exc:
            raise Overloaded(f"producer buffer full or metadata unavailable: {exc}") from exc
        except KafkaError as exc:
            self._retire(producer)
            raise Unavailable(str(exc)) from exc
        try:
            async with asyncio.timeout(self._timeout_s):
                await asyncio.gather(*waiting)
        except (TimeoutError, KafkaError) as exc:
            self._retire(producer)
            raise Unavailable(f"broker did not acknowledge: {exc!r}") from exc

    @staticmethod
    def _send_all(
        producer: Any, records: Sequence[Record], loop: asyncio.AbstractEventLoop
    ) -> list[asyncio.Future[Any]]:
        waiting = []
        for r in records:
            done: asyncio.Future[Any] = loop.create_future()
            sent = producer.send(r.topic, key=r.key, value=r.value, headers=list(r.headers))
            sent.add_callback(_settle, loop, done)
            sent.add_errback(_settle, loop, done)
            waiting.append(done)
        return waiting

    async def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await asyncio.to_thread(producer.close, timeout=self._timeout_s)


def _settle(loop: asyncio.AbstractEventLoop, done: asyncio.Future[Any], outcome: Any) -> None:
    """Called on the producer's thread with record metadata, or with the exception."""

    def resolve() -> None:
        if done.done():
            return
        if isinstance(outcome, BaseException):
            done.set_exception(outcome)
        else:
            done.set_result(outcome)

    # RuntimeError: the loop is gone, so nobody waits for this record any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(resolve)
