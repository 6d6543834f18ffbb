"""The aggregator's write path as the consume loop drives it.

Batches are applied exactly once (:mod:`services.aggregator.batch`); one that fails because
of what some of its records hold is applied in halves down to the record, which becomes a
dead letter. The processor keeps the person cache across batches and runs the chores:
backfill, purge and planner statistics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from services.aggregator import metrics
from services.aggregator.backfill import backfill_step
from services.aggregator.batch import Applied, apply_batch, letter
from services.aggregator.model import Partition
from services.aggregator.person_cache import PersonCache
from services.aggregator.repository import Sessions, events, offsets, statistics
from services.aggregator.repository.dead_letters import add_dead_letters
from services.aggregator.repository.offsets import StaleOffsets
from services.aggregator.source import SourceRecord
from shared.clock import Clock, SystemClock
from shared.db import is_unavailable

log = logging.getLogger(__name__)


class Processor:
    def __init__(
        self,
        sessions: Sessions,
        group_id: str,
        horizon_us: Callable[[], int],
        cache_capacity: int = 50_000,
        clock: Clock | None = None,
        topic_partitions: Callable[[], Sequence[int]] | None = None,
    ) -> None:
        self._sessions = sessions
        self._group_id = group_id
        self._horizon_us = horizon_us
        self._clock = clock or SystemClock()
        self.cache = PersonCache(cache_capacity)
        # The events topic's partitions, which decide which process owns an id (see
        # services/aggregator/linking.py); none known: this process owns every id.
        self._topic_partitions = topic_partitions
        self._partitions: tuple[int, ...] = ()

    async def load_offsets(self, partitions: list[Partition]) -> dict[Partition, int]:
        """The stored offsets of newly assigned partitions. What this process held of its
        persons is forgotten: while the partitions were elsewhere, others wrote them."""
        self.cache.clear()
        if self._topic_partitions is not None:
            self._partitions = tuple(sorted(self._topic_partitions()))
        async with self._sessions() as session:
            return await offsets.load_offsets(session, self._group_id, partitions)

    async def apply(
        self, records: Sequence[SourceRecord], expected: dict[Partition, int | None]
    ) -> dict[Partition, int]:
        """Apply a batch; return each partition's new next offset (now committed).

        A batch that fails for any reason but the database being unavailable
        (``is_unavailable``: those errors are raised, for the caller to retry) or its
        partitions having moved (``StaleOffsets``) is taken to fail because of what some of
        its records hold: it is split in two in offset order, each half applied in its own
        transaction with its own offsets (the second expecting what the first committed),
        down to the single record, which goes to the dead letters with the reason while its
        offset moves on. The rest of the batch is applied, exactly once.
        """
        try:
            return await self._apply_batch(records, expected)
        except StaleOffsets:
            raise
        except Exception as exc:
            if is_unavailable(exc) or not records:
                raise
            if len(records) == 1:
                return await self._isolate(records[0], expected, exc)
            first = records[0]
            log.warning(
                "batch of %d records from %s[%d]@%d failed (%s); applying it in halves",
                len(records), first.topic, first.partition, first.offset, _reason(exc),
            )  # fmt: skip
        half = len(records) // 2
        done = await self.apply(records[:half], expected)
        rest = await self.apply(records[half:], {**expected, **done})
        return {**done, **rest}

    async def _apply_batch(
        self, records: Sequence[SourceRecord], expected: dict[Partition, int | None]
    ) -> dict[Partition, int]:
        started = time.perf_counter()
        horizon, now = self._horizon_us(), self._clock.now_us()
        try:
            async with self._sessions.begin() as session:
                done = await apply_batch(
                    session, self._group_id, records, expected, horizon, self.cache, now,
                    self._partitions,
                )  # fmt: skip
        except BaseException:
            self.cache.clear()  # what the failed transaction would have written is unknown
            raise
        self.cache.forget(done.forget)  # persons of several ids are read each time
        self.cache.remember(done.before.since, done.before.events, done.added, done.evaluated)
        _observe(done, self.cache, time.perf_counter() - started)
        return done.committed

    async def apply_signals(self, expected: dict[Partition, int | None]) -> None:
        """Take the signals of the partitions held (``expected``) without records, also
        of partitions with nothing applied yet (their offset rows are held all the same)."""
        if expected:
            await self._apply_batch([], expected)

    async def _isolate(
        self, r: SourceRecord, expected: dict[Partition, int | None], exc: Exception
    ) -> dict[Partition, int]:
        """One record that cannot be applied: a dead letter, and its offset moves on."""
        reason = f"not applicable: {_reason(exc)}"
        log.error("dead letter %s[%d]@%d: %s", r.topic, r.partition, r.offset, reason)
        partition = (r.topic, r.partition)
        now = self._clock.now_us()
        async with self._sessions.begin() as session:
            await add_dead_letters(session, [letter(r, reason)], now)
            move = {partition: (expected.get(partition), r.offset + 1)}
            await offsets.advance_offsets(session, self._group_id, move, now)
        metrics.EVENTS.labels("dead_letter").inc()
        return {partition: r.offset + 1}

    async def purge_expired(self) -> int:
        """Delete stored events older than the retention horizon; their entries stay."""
        async with self._sessions.begin() as session:
            return await events.delete_events_before(session, self._horizon_us())

    async def refresh_statistics(self) -> None:
        async with self._sessions.begin() as session:
            analyzed = await statistics.analyze_if_stale(session)
        if analyzed:
            log.info("analyzed %s", ", ".join(analyzed))

    async def backfill_step(self, limit: int) -> bool:
        """Recompute the next persons of one funnel being backfilled; False if none is."""
        horizon, now = self._horizon_us(), self._clock.now_us()
        async with self._sessions.begin() as session:
            persons = await backfill_step(session, limit, horizon, now)
        if persons is None:
            return False
        metrics.BACKFILL_PERSONS.inc(persons)
        return True


def _observe(done: Applied, cache: PersonCache, seconds: float) -> None:
    metrics.KNOWN_ITEMS.set(cache.size)
    held = len(done.before.cached)
    metrics.PERSONS_READ.labels("memory").inc(held)
    metrics.PERSONS_READ.labels("database").inc(len(done.before.since) - held)
    for outcome, n in done.outcomes.items():
        metrics.EVENTS.labels(outcome).inc(n)
    if done.fresh:
        metrics.LAST_EVENT_TIME.set(max(e.timestamp for e in done.fresh).timestamp())
    metrics.BATCH_SECONDS.observe(seconds)
    metrics.IDENTITY_LINKS.inc(done.relinked.links_made)
    for refusal in done.relinked.refusals:
        metrics.IDENTITY_REFUSALS.labels(refusal.kind).inc()


def _reason(exc: BaseException) -> str:
    """What went wrong, without the SQL statement and parameters SQLAlchemy adds."""
    inner = getattr(exc, "orig", None)
    cause = inner if isinstance(inner, BaseException) else exc
    return f"{type(cause).__name__}: {cause}"[:500]
