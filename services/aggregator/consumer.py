"""The aggregator's consume loop: start partitions, apply batches, keep house, ride out outages.

Nothing that fails here ends the loop. A batch that fails while the database is unavailable
(or that went stale, or failed for a reason nobody foresaw) leaves its records unapplied:
every partition is rewound (paused, its position to be sought again from the offsets stored
in the database) and the loop waits with exponential backoff, polling the paused consumer so
that the group keeps it as a member, until the database answers again. Exactly once holds
because applying, and where to resume from, are decided by the database alone.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from kafka.errors import KafkaError

from services.aggregator import metrics, timing
from services.aggregator.freshness import Progress
from services.aggregator.model import Partition
from services.aggregator.repository.offsets import StaleOffsets
from services.aggregator.source import Source, SourceRecord
from shared.clock import US, now_us
from shared.db import is_unavailable

log = logging.getLogger(__name__)


class Backoff:
    """Delays between retries: ``first_s``, doubling up to ``cap_s`` (±10 % jitter)."""

    def __init__(self, first_s: float = 0.2, cap_s: float = 10.0) -> None:
        self._first_s, self._cap_s = first_s, cap_s
        self.failures = 0
        self.since = 0.0  # monotonic time of the first failure in a row

    def next(self) -> float:
        if not self.failures:
            self.since = time.monotonic()
        delay = min(self._first_s * 2.0**self.failures, self._cap_s)
        self.failures += 1
        return delay * random.uniform(0.9, 1.1)  # noqa: S311 - jitter, not a secret

    def reset(self) -> float:
        """Forget the failures; return how long they lasted (0 when there were none)."""
        lasted = time.monotonic() - self.since if self.failures else 0.0
        self.failures = 0
        return lasted


# How often each chore runs, and how long one waits after failing for another reason than
# the database being unavailable (it is logged, and the batches go on meanwhile; failing
# because the database is unavailable, it fails the round like a batch).
EVERY_S = {"backfill": 1.0, "purge": 3600.0, "statistics": 15.0, "lag": 5.0, "signals": 0.2}
AFTER_FAILURE_S = 60.0


class Processor(Protocol):
    """What the loop drives (:class:`services.aggregator.processor.Processor`)."""

    async def load_offsets(self, partitions: list[Partition]) -> dict[Partition, int]: ...

    async def apply(
        self, records: Sequence[SourceRecord], expected: dict[Partition, int | None]
    ) -> dict[Partition, int]: ...

    async def backfill_step(self, limit: int) -> bool: ...

    async def purge_expired(self) -> int: ...

    async def refresh_statistics(self) -> None: ...

    async def apply_signals(self, expected: dict[Partition, int | None]) -> None: ...


class Consumer:
    def __init__(
        self,
        processor: Processor,
        source: Source,
        stop: asyncio.Event,
        *,
        backfill_persons: int,
        progress: Progress | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._processor = processor
        self._progress = progress
        self._source = source
        self._stop = stop
        self._backfill_persons = backfill_persons
        self._backoff = backoff or Backoff()
        self._due = dict.fromkeys(EVERY_S, 0.0)
        self._doing = "offsets"  # what the round was doing when it failed (a metric label)

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self._round()
            except StaleOffsets as exc:
                log.warning("partition moved to another consumer (%s); re-seeking", exc)
                await self._rewind()
            except Exception as exc:
                await self._failed(exc)

    async def _round(self) -> None:
        pending = await asyncio.to_thread(self._source.pending)
        if pending:
            self._doing = "offsets"
            stored = await self._processor.load_offsets(list(pending))
            self._answered()
            await asyncio.to_thread(self._source.start, stored, pending)
        with timing.phase("poll"):
            records = await asyncio.to_thread(self._source.poll)
        if records:
            self._doing = "batch"
            with timing.phase("apply"):
                committed = await self._processor.apply(records, self._source.expected())
            self._answered()
            await asyncio.to_thread(self._source.committed, committed)
            _observe_age(records[-1].timestamp_ms, records[-1].partition)
            if self._progress is not None:
                self._progress.applied(records)
        with timing.phase("chores"):
            await self._chores(idle=not records)
        if self._progress is not None:
            with timing.phase("progress"):
                await self._progress.observe(self._source, ())
        timing.flush(
            records=len(records),
            partitions=sorted({r.partition for r in records}),
        )

    def _answered(self) -> None:
        """The database answered: the failures, if any, are over."""
        if self._backoff.failures:
            log.info("the database answers again after %.1f s of failures", self._backoff.reset())

    async def _failed(self, exc: Exception) -> None:
        """Rewind, then wait out the backoff while keeping the group membership."""
        delay = self._backoff.next()
        if is_unavailable(exc):
            metrics.DATABASE_ERRORS.labels(self._doing).inc()
            log.warning("database unavailable (%s); retrying in %.1f s", _brief(exc), delay)
        elif isinstance(exc, KafkaError):
            log.warning("broker error (%s); retrying in %.1f s", exc, delay)
        else:
            log.exception("consuming failed; retrying in %.1f s", delay)
        await self._rewind()
        deadline = time.monotonic() + delay
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:  # every partition is paused: this only heartbeats and follows rebalances
                await asyncio.to_thread(self._source.poll)
            except Exception as again:  # the wait must end, whatever the consumer says
                log.debug("poll while waiting: %s", again)
                await asyncio.sleep(min(1.0, max(deadline - time.monotonic(), 0)))

    async def _rewind(self) -> None:
        try:
            await asyncio.to_thread(self._source.rewind)
        except Exception as exc:  # the next failing round rewinds again
            log.warning("could not rewind: %s", exc)

    async def _chores(self, idle: bool) -> None:
        """Backfill when idle and at least once a second when busy; purge, analyze, lag;
        take the signals of other partitions' owners while no records come (a batch takes
        them too)."""
        now = time.monotonic()
        chores: dict[str, Callable[[], Awaitable[object]]] = {
            "backfill": lambda: self._processor.backfill_step(self._backfill_persons),
            "purge": self._processor.purge_expired,
            "statistics": self._processor.refresh_statistics,
            "lag": self._lag,
            "signals": lambda: self._processor.apply_signals(self._source.expected()),
        }
        for name, chore in chores.items():
            if now < self._due[name] and not (name == "backfill" and idle):
                continue
            if name == "signals" and not idle:
                continue
            self._due[name] = now + EVERY_S[name]
            self._doing = name
            try:
                with timing.phase(name):
                    await chore()
            except Exception as exc:
                if is_unavailable(exc) or isinstance(exc, StaleOffsets):
                    raise
                log.exception("%s failed; again in %.0f s", name, AFTER_FAILURE_S)
                self._due[name] = now + AFTER_FAILURE_S
                continue
            if name != "lag":
                self._answered()

    async def _lag(self) -> None:
        for (_, partition), lag in (await asyncio.to_thread(self._source.lag)).items():
            metrics.LAG_RECORDS.labels(str(partition)).set(lag)


def _observe_age(timestamp_ms: int, partition: int) -> None:
    if timestamp_ms > 0:
        age = max((now_us() - timestamp_ms * 1000) / US, 0.0)
        metrics.LAG_SECONDS.labels(str(partition)).set(age)


def _brief(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None)
    cause = inner if isinstance(inner, BaseException) else exc
    return f"{type(cause).__name__}: {cause}"[:300]
