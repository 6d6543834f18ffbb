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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.aggregator import metrics, outbox, repository
from services.aggregator.engine import Evaluator, PersonEvent, PersonProgress, reach_us
from services.aggregator.known import FunnelKey, Known, KnownPersons
from services.aggregator.repository import PersonKey
from services.aggregator.source import Partition, SourceRecord
from shared.events import CanonicalEvent, WireError, format_time, from_micros, to_micros
from shared.funnel import entry_value
from shared.keys import now_us

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
        """Apply a batch; return each partition's new next offset (now committed)."""
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
            partitions: dict[PersonKey, set[Partition]] = defaultdict(set)
            for r in records:
                moves[(r.topic, r.partition)] = (expected.get((r.topic, r.partition)), r.offset + 1)
                event = await self._decode(session, r)
                if event is None:
                    outcomes["dead_letter"] += 1
                elif to_micros(event.timestamp) < horizon:
                    outcomes["expired"] += 1
                else:
                    fresh.append(event)
                    partitions[(event.project_id, event.person_id)].add((r.topic, r.partition))
            projects = {project for project, _ in partitions}
            funnels = await repository.active_funnels(session, projects) if projects else []
            evaluators = {f.id: Evaluator(f.definition) for f in funnels}
            # Read before writing: what the batch adds is in hand already, and a person seen
            # for the first time costs one empty index probe instead of reading rows back.
            # Only as far back as the batch's events can change anything (see reach_us), and
            # only for persons with an event that concerns some funnel; persons this process
            # knows (see known.py) are not read at all.
            since, concerned = _read_since(fresh, funnels, evaluators, horizon)
            before = await _histories(session, since, self.known)
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

    async def _decode(self, session: AsyncSession, r: SourceRecord) -> CanonicalEvent | None:
        try:
            if r.value is None:
                raise WireError("record has no value")
            return CanonicalEvent.from_json(r.value)
        except WireError as exc:
            log.warning("dead letter %s[%d]@%d: %s", r.topic, r.partition, r.offset, exc)
            await repository.dead_letter(
                session, r.topic, r.partition, r.offset, r.key, r.value, str(exc)
            )
            return None

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
            await repository.replace_progress(
                session, funnel.id, progress, horizon, _graces(funnel)
            )
            cursor = persons[-1] if persons else funnel.backfill_cursor
            await repository.advance_backfill(
                session, funnel.id, cursor, len(persons), done=len(persons) < limit
            )
        metrics.BACKFILL_PERSONS.inc(len(persons))
        return True


# Persons whose bounds lie within this of each other share one (the lowest): one set of
# statements per group, and a bound lower than needed only costs some re-evaluation. An hour
# made a batch of events spread over a day (a replay; the aggregator benchmark) into some 24
# groups, 5,611 instead of 7,825 events/s; a day keeps such batches whole, and still sends
# only a days-late event's own person that far back.
GROUP_SLACK_US = 86_400_000_000


def bound_groups(bounds: Mapping[str, int]) -> list[tuple[int, list[str]]]:
    """Persons grouped by their earliest instant to re-evaluate from: the group's lowest."""
    groups: list[tuple[int, list[str]]] = []
    for person, since in sorted(bounds.items(), key=lambda kv: (kv[1], kv[0])):
        if groups and since - groups[-1][0] <= GROUP_SLACK_US:
            groups[-1][1].append(person)
        else:
            groups.append((since, [person]))
    return groups


def _read_since(
    fresh: Iterable[CanonicalEvent],
    funnels: Sequence[repository.ActiveFunnel],
    evaluators: Mapping[str, Evaluator],
    horizon_us: int,
) -> tuple[dict[PersonKey, int], dict[PersonKey, set[str]]]:
    """Per person with an event that concerns a funnel of their project: the earliest stored
    event any of the project's funnels may need to re-evaluate the person (see ``recompute``),
    and the ids of the funnels their events concern (see ``Evaluator.concerns``)."""
    reach: dict[str, int] = {}
    mine: dict[str, list[repository.ActiveFunnel]] = defaultdict(list)
    for f in funnels:
        reach[f.project_id] = max(reach.get(f.project_id, 0), reach_us(f.definition))
        mine[f.project_id].append(f)
    since: dict[PersonKey, int] = {}
    concerned: dict[PersonKey, set[str]] = defaultdict(set)
    for e in fresh:
        ids = {
            f.id
            for f in mine.get(e.project_id, ())
            if evaluators[f.id].concerns(e.event, e.properties, e.context)
        }
        if ids:
            key = (e.project_id, e.person_id)
            concerned[key] |= ids
            bound = max(horizon_us, to_micros(e.timestamp) - reach[e.project_id])
            since[key] = min(since.get(key, bound), bound)
    return since, concerned


@dataclass(frozen=True, slots=True)
class Histories:
    events: dict[PersonKey, list[PersonEvent]]  # stored before the batch, from ``since`` on
    since: dict[PersonKey, int]
    known: dict[PersonKey, Known]  # persons whose events came from what this process knew


async def _histories(
    session: AsyncSession, since_us: Mapping[PersonKey, int], known: KnownPersons
) -> Histories:
    """The stored events of these persons from (at least) their ``since_us`` on, and the
    instant each person's were read from (their group's bound): from ``known`` when it
    holds them from there on, else from the database."""
    by_project: dict[str, dict[str, int]] = defaultdict(dict)
    for (project, person), since in since_us.items():
        by_project[project][person] = since
    found = Histories({}, {}, {})
    for project, bounds in sorted(by_project.items()):
        for since, people in bound_groups(bounds):
            unknown = []
            for person in people:
                key = (project, person)
                found.since[key] = since
                held = known.get(key, since)
                if held is None:
                    unknown.append(person)
                else:
                    found.known[key] = held
                    found.events[key] = [e for e in held.events if e.ts >= since]
            if unknown:
                history = await repository.person_events(session, project, unknown, since)
                found.events.update(((project, p), events) for p, events in history.items())
    return found


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


async def recompute(
    session: AsyncSession,
    funnels: Sequence[repository.ActiveFunnel],
    evaluators: Mapping[str, Evaluator],
    before: Histories,
    added: Mapping[PersonKey, Sequence[PersonEvent]],
    concerned: Mapping[PersonKey, set[str]],
) -> tuple[set[tuple[str, str, str]], dict[PersonKey, dict[FunnelKey, PersonProgress]]]:
    """Re-evaluate the ``funnels`` of the persons with ``added`` events (stored by this
    transaction) whose batch events ``concerned`` them (the stored twin of a duplicate is
    one of those) from those and the events stored ``before`` it; return the (funnel,
    project, person) whose stored entries or touches changed, and the progress each person
    now has stored per funnel evaluated.

    Each person only from where their stored events were read: at most the longest
    ``reach_us`` of the project's funnels before their earliest new event (persons whose
    bounds are within a day share the lowest). What started earlier cannot change, so a person's
    long past costs nothing per batch (it once made a person with 1,000 stored events 60
    times slower per event than a new one), and one person's very late event does not send
    the others of the batch back as far. A person with nothing stored from there on has no
    stored progress there to compare with.
    """
    changed: set[tuple[str, str, str]] = set()
    evaluated: dict[PersonKey, dict[FunnelKey, PersonProgress]] = defaultdict(dict)
    by_project: dict[str, set[str]] = defaultdict(set)
    for project, person in added:
        by_project[project].add(person)
    for project, people in sorted(by_project.items()):
        mine = [f for f in funnels if f.project_id == project]
        if not mine:
            continue
        listening = await outbox.subscribed_types(session, project) & STEP_TYPES
        for funnel in mine:
            evaluator = evaluators[funnel.id]
            groups: dict[int, list[str]] = defaultdict(list)
            for p in sorted(people):
                if funnel.covers(p) and funnel.id in concerned.get((project, p), ()):
                    groups[before.since[(project, p)]].append(p)
            for since, group in sorted(groups.items()):
                stored = {p: before.events.get((project, p), []) for p in group}
                progress = {p: evaluator([*stored[p], *added[(project, p)]]) for p in group}
                first_seen = {p for p in group if not stored[p]}
                held = {}
                for p in group:
                    if (known := before.known.get((project, p))) is not None:
                        found = known.progress_from(funnel.key, since)
                        if found is not None:
                            held[p] = found
                replaced = await repository.replace_progress(
                    session, funnel.id, progress, since, _graces(funnel), first_seen, held
                )
                changed.update((funnel.id, project, person) for person in replaced.changed)
                for p, found in progress.items():  # timers are not compared: left out
                    evaluated[(project, p)][funnel.key] = PersonProgress(
                        found.entries, found.touches
                    )
                if listening:
                    await _announce(session, funnel, replaced.advances, listening)
    return changed, evaluated


STEP_TYPES = {"funnel.step_reached", "funnel.converted"}


async def _announce(
    session: AsyncSession,
    funnel: repository.ActiveFunnel,
    advances: list[repository.Advance],
    listening: set[str],
) -> None:
    """``funnel.step_reached`` per newly reached step, ``funnel.converted`` at the last one.

    Only live processing announces; a backfill replays history silently. The webhook id is
    derived from funnel, person, entry and step, so a recomputation never announces twice.
    """
    steps = funnel.definition.steps
    stamp = now_us()
    for a in advances:
        for k in range(a.before + 1, a.entry.reached + 1):
            types = ["funnel.step_reached"] + (["funnel.converted"] if k == len(steps) else [])
            for type_ in (t for t in types if t in listening):
                payload = {
                    "project": funnel.project_id,
                    "funnel": {"id": funnel.id, "name": funnel.name},
                    "person_id": a.person_id,
                    "entry_time": format_time(from_micros(a.entry.t0)),
                    "step": {"step": k, "name": steps[k - 1].name},
                    "reached_at": format_time(from_micros(a.entry.step_times[k - 1])),
                    "value": entry_value(funnel.definition, a.entry),
                }
                await outbox.enqueue(
                    session,
                    project_id=funnel.project_id,
                    type_=type_,
                    msg_id=outbox.message_id(type_, funnel.id, a.person_id, a.entry.t0, k),
                    payload=payload,
                    funnel_id=funnel.id,
                    now_us=stamp,
                )


def _graces(funnel: repository.ActiveFunnel) -> dict[str, int]:
    return {rule.name: rule.grace_s for rule in funnel.definition.remarketing}
