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
from typing import Any, NamedTuple, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from shared.events import EVENTS_TOPIC, partition_for

log = logging.getLogger(__name__)


class Record(NamedTuple):
    """One record to publish (a named tuple: made for every event, so it must be cheap)."""

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
                producer = KafkaProducer(
                    bootstrap_servers=self._bootstrap,
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=5,
                    batch_size=65_536,
                    max_block_ms=250,
                    request_timeout_ms=max(timeout_ms // 2, 1000),
                    delivery_timeout_ms=timeout_ms,
                    bootstrap_timeout_ms=timeout_ms,
                )
                # Fetch the topic's metadata here, not during a request on the event loop.
                producer.partitions_for(EVENTS_TOPIC)
                self._producer = producer
            return self._producer

    def _retire(self, producer: Any) -> None:
        with self._lock:
            if self._producer is producer:
                self._producer = None
        threading.Thread(target=producer.close, kwargs={"timeout": 0}, daemon=True).start()

    async def publish(self, records: Sequence[Record]) -> None:
        if not records:
            return
        try:
            producer = self._producer or await asyncio.to_thread(self._current)
        except KafkaError as exc:
            raise Unavailable(f"broker unreachable: {exc}") from exc
        try:
            # On the event loop's own thread: a send only appends to the producer's buffer, and
            # blocks (at most max_block_ms) only when the buffer is full or metadata is missing.
            # A hop to a worker thread per request cost more in GIL hand-offs than it saved.
            acknowledged = _send_all(producer, records, asyncio.get_running_loop())
        except KafkaTimeoutError as exc:
            if "memory" in str(exc):
                raise Overloaded(f"producer buffer full: {exc}") from exc
            self._retire(producer)
            raise Unavailable(f"broker metadata unavailable: {exc}") from exc
        except KafkaError as exc:
            self._retire(producer)
            raise Unavailable(str(exc)) from exc
        try:
            async with asyncio.timeout(self._timeout_s):
                await acknowledged
        except (TimeoutError, KafkaError) as exc:
            self._retire(producer)
            raise Unavailable(f"broker did not acknowledge: {exc!r}") from exc

    async def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await asyncio.to_thread(producer.close, timeout=self._timeout_s)


def _send_all(
    producer: Any, records: Sequence[Record], loop: asyncio.AbstractEventLoop
) -> asyncio.Future[None]:
    """Send every record; the returned future settles with the last acknowledgement."""
    done: asyncio.Future[None] = loop.create_future()
    tally = _Tally(len(records), loop, done)
    partitions: dict[str, list[int]] = {}
    for r in records:
        if r.topic not in partitions:
            partitions[r.topic] = sorted(producer.partitions_for(r.topic))
        sent = producer.send(
            r.topic,
            key=r.key,
            value=r.value,
            headers=list(r.headers),
            partition=partition_for(r.key, partitions[r.topic]),
        )
        sent.add_callback(tally.acknowledged)
        sent.add_errback(tally.failed)
    return done


class _Tally:
    """Counts a request's acknowledgements on the producer's thread; wakes the loop once."""

    def __init__(
        self, pending: int, loop: asyncio.AbstractEventLoop, done: asyncio.Future[None]
    ) -> None:
        self._pending = pending
        self._loop = loop
        self._done = done
        self._lock = threading.Lock()
        self._settled = False

    def acknowledged(self, _metadata: Any) -> None:
        with self._lock:
            self._pending -= 1
            last = self._pending == 0 and not self._settled
            self._settled = self._settled or last
        if last:
            self._settle(None)

    def failed(self, error: BaseException) -> None:
        with self._lock:
            first = not self._settled
            self._settled = True
        if first:
            self._settle(error)

    def _settle(self, error: BaseException | None) -> None:
        def resolve() -> None:
            if self._done.done():
                return
            if error is None:
                self._done.set_result(None)
            else:
                self._done.set_exception(error)

        # RuntimeError: the loop is gone, so nobody waits for these records any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(resolve)
