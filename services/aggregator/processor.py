"""One poll batch = one transaction: events, per-person progress and offsets commit together.

Exactly once: a record's effects and the partition's next offset are written in the same
database transaction, so a crash before commit leaves neither and a restart re-applies the
batch; after commit both are there and the consumer resumes after it. Events are also
deduplicated by (project, event id), so a record published twice changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.aggregator import metrics, repository
from services.aggregator.engine import Evaluator, PersonEvent, PersonProgress
from services.aggregator.known import FunnelKey, Known, KnownPersons
from services.aggregator.reevaluate import (
    Histories,
    graces,
    load_histories,
    read_since,
    recompute,
)
from services.aggregator.repository import PersonKey, StaleOffsets
from services.aggregator.source import Partition, SourceRecord
from shared.db import is_unavailable
from shared.events import CanonicalEvent, WireError, format_time, from_micros, to_micros

log = logging.getLogger(__name__)


class Processor:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        group_id: str,
        horizon_us: Callable[[], int],
        known_capacity: int = 50_000,
    ) -> None:
        self._sessions = sessions
        self._group_id = group_id
        self._horizon_us = horizon_us
        self.known = KnownPersons(known_capacity)

    async def load_offsets(self, partitions: list[Partition]) -> dict[Partition, int]:
        """The stored offsets of newly assigned partitions. What this process knew of its
        persons is forgotten: while the partitions were elsewhere, others wrote them."""
        self.known.clear()
        async with self._sessions() as session:
            return await repository.load_offsets(session, self._group_id, partitions)

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
        moves: dict[Partition, tuple[int | None, int]] = {}
        outcomes: dict[str, int] = defaultdict(int)
        try:
            done = await self._transaction(records, expected, moves, outcomes)
        except BaseException:
            self.known.clear()  # what the failed transaction would have written is unknown
            raise
        _remember(self.known, done)
        metrics.KNOWN_ITEMS.set(self.known.size)
        held = len(done.before.known)
        metrics.PERSONS_READ.labels("memory").inc(held)
        metrics.PERSONS_READ.labels("database").inc(len(done.before.since) - held)
        stored = sum(len(new) for new in done.added.values())
        outcomes["stored"] += stored
        outcomes["duplicate"] += len(done.fresh) - stored
        for outcome, n in outcomes.items():
            metrics.EVENTS.labels(outcome).inc(n)
        if done.fresh:
            metrics.LAST_EVENT_TIME.set(max(e.timestamp for e in done.fresh).timestamp())
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        return {p: new for p, (_, new) in moves.items()}

    async def _isolate(
        self, r: SourceRecord, expected: dict[Partition, int | None], exc: Exception
    ) -> dict[Partition, int]:
        """One record that cannot be applied: a dead letter, and its offset moves on."""
        reason = f"not applicable: {_reason(exc)}"
        log.error("dead letter %s[%d]@%d: %s", r.topic, r.partition, r.offset, reason)
        partition = (r.topic, r.partition)
        async with self._sessions.begin() as session:
            await repository.add_dead_letters(session, [_letter(r, reason)])
            await repository.advance_offsets(
                session, self._group_id, {partition: (expected.get(partition), r.offset + 1)}
            )
        metrics.EVENTS.labels("dead_letter").inc()
        return {partition: r.offset + 1}

    async def _transaction(
        self,
        records: Sequence[SourceRecord],
        expected: dict[Partition, int | None],
        moves: dict[Partition, tuple[int | None, int]],
        outcomes: dict[str, int],
    ) -> Applied:
        horizon = self._horizon_us()
        async with self._sessions.begin() as session:
            fresh: list[CanonicalEvent] = []
            letters: list[repository.DeadLetter] = []
            partitions: dict[PersonKey, set[Partition]] = defaultdict(set)
            for r in records:
                moves[(r.topic, r.partition)] = (expected.get((r.topic, r.partition)), r.offset + 1)
                event = _decode(r)
                if isinstance(event, str):
                    outcomes["dead_letter"] += 1
                    letters.append(_letter(r, event))
                elif to_micros(event.timestamp) < horizon:
                    # Ingest refuses these; a replay of an old topic or another producer
                    # may still send them. Kept, not counted: they are past the purge.
                    outcomes["expired"] += 1
                    letters.append(_letter(r, _expired(horizon)))
                else:
                    fresh.append(event)
                    partitions[(event.project_id, event.person_id)].add((r.topic, r.partition))
            await repository.add_dead_letters(session, letters)
            projects = {project for project, _ in partitions}
            funnels = await repository.active_funnels(session, projects) if projects else []
            evaluators = {f.id: Evaluator(f.definition) for f in funnels}
            # Read before writing: what the batch adds is in hand already, and a person seen
            # for the first time costs one empty index probe instead of reading rows back.
            # Only as far back as the batch's events can change anything (see reach_us), and
            # only for persons with an event that concerns some funnel; persons this process
            # knows (see known.py) are not read at all.
            since, concerned = read_since(fresh, funnels, evaluators, horizon)
            before = await load_histories(session, since, self.known)
            added = await repository.store_events(session, fresh)
            changed, evaluated = await recompute(
                session, funnels, evaluators, before, added, concerned
            )
            await repository.count_changes(
                session,
                {
                    (funnel_id, topic, partition)
                    for funnel_id, project, person in changed
                    for topic, partition in partitions[(project, person)]
                },
            )
            await repository.advance_offsets(session, self._group_id, moves)
        return Applied(fresh, before, added, evaluated)

    async def purge_expired(self) -> int:
        """Delete stored events older than the retention horizon; their entries stay."""
        async with self._sessions.begin() as session:
            return await repository.delete_events_before(session, self._horizon_us())

    async def refresh_statistics(self) -> None:
        async with self._sessions.begin() as session:
            analyzed = await repository.analyze_if_stale(session)
        if analyzed:
            log.info("analyzed %s", ", ".join(analyzed))

    async def backfill_step(self, limit: int) -> bool:
        """Recompute the next persons of one funnel being backfilled; False if none is."""
        async with self._sessions.begin() as session:
            funnel = await repository.lock_pending_backfill(session)
            if funnel is None:
                return False
            persons = await repository.backfill_persons(session, funnel, limit)
            horizon = self._horizon_us()
            history = await repository.person_events(session, funnel.project_id, persons, horizon)
            evaluator = Evaluator(funnel.definition)
            progress = {p: evaluator(history.get(p, ())) for p in persons}
            # Not counted as changes: reports key on the backfill's progress instead.
            await repository.replace_progress(session, funnel.id, progress, horizon, graces(funnel))
            cursor = persons[-1] if persons else funnel.backfill_cursor
            await repository.advance_backfill(
                session, funnel.id, cursor, len(persons), done=len(persons) < limit
            )
        metrics.BACKFILL_PERSONS.inc(len(persons))
        return True


def _decode(r: SourceRecord) -> CanonicalEvent | str:
    """The record's event, or why it is a dead letter."""
    try:
        if r.value is None:
            raise WireError("record has no value")
        return CanonicalEvent.from_json(r.value)
    except WireError as exc:
        log.warning("dead letter %s[%d]@%d: %s", r.topic, r.partition, r.offset, exc)
        return str(exc)


def _letter(r: SourceRecord, reason: str) -> repository.DeadLetter:
    return repository.DeadLetter(r.topic, r.partition, r.offset, r.key, r.value, reason)


def _expired(horizon_us: int) -> str:
    return f"expired: older than the retention horizon ({format_time(from_micros(horizon_us))})"


def _reason(exc: BaseException) -> str:
    """What went wrong, without the SQL statement and parameters SQLAlchemy adds."""
    inner = getattr(exc, "orig", None)
    cause = inner if isinstance(inner, BaseException) else exc
    return f"{type(cause).__name__}: {cause}"[:500]


@dataclass(frozen=True, slots=True)
class Applied:
    """A committed batch: what it read, stored and evaluated."""

    fresh: list[CanonicalEvent]
    before: Histories
    added: dict[PersonKey, list[PersonEvent]]
    evaluated: dict[PersonKey, dict[FunnelKey, PersonProgress]]


def _remember(known: KnownPersons, done: Applied) -> None:
    """After the commit: each person read by the batch is known from their read bound on,
    with the progress just stored for the funnels evaluated, and what was known for the
    others that still holds from there on. A known person's events that were not read
    (they concern no funnel) are added to what is known of them."""
    for key, since in done.before.since.items():
        held = known.peek(key)
        progress: dict[FunnelKey, PersonProgress] = {}
        if held is not None:
            for funnel in held.progress:
                kept = held.progress_from(funnel, since)
                if kept is not None:
                    progress[funnel] = kept
        progress.update(done.evaluated.get(key, {}))
        events = [*done.before.events.get(key, ()), *done.added.get(key, ())]
        known.put(key, Known(since, events, progress))
    for key, new in done.added.items():
        if key not in done.before.since and (held := known.peek(key)) is not None:
            known.put(key, Known(held.since, [*held.events, *new], held.progress))
