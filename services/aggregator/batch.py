"""One poll batch, one transaction: load, evaluate, compare, save, move the offsets.

Exactly once: a record's effects and its partition's next offset are written in the same
database transaction, so a crash before commit leaves neither and a restart re-applies the
batch; after commit both are there and the consumer resumes after it. Events are also
deduplicated by (project, event id), so a record published twice changes nothing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from services.aggregator import changes, linking, messages, reevaluate, timing
from services.aggregator.engine import Evaluator, PersonEvent, PersonProgress
from services.aggregator.model import ActiveFunnel, Partition, Signal
from services.aggregator.person_cache import FunnelKey, PersonCache, PersonKey
from services.aggregator.reevaluate import Group, Histories
from services.aggregator.repository import (
    Session,
    events,
    funnels,
    identities,
    offsets,
    outbox,
    progress,
    signals,
    timers,
)
from services.aggregator.repository.dead_letters import DeadLetter, add_dead_letters
from services.aggregator.source import SourceRecord
from shared.events import CanonicalEvent, WireError, format_time, from_micros, to_micros

log = logging.getLogger(__name__)

Evaluated = dict[PersonKey, dict[FunnelKey, PersonProgress]]


@dataclass(frozen=True, slots=True)
class Sorted:
    """A batch's records sorted out: the events to apply (and the partitions each person's
    came from), the dead letters, each partition's offset move (from what is expected to be
    stored to the next offset) and how many records had each outcome so far."""

    fresh: list[CanonicalEvent]
    partitions: dict[PersonKey, set[Partition]]
    letters: list[DeadLetter]
    moves: dict[Partition, tuple[int | None, int]]
    outcomes: dict[str, int]


def sort_records(
    records: Sequence[SourceRecord], expected: Mapping[Partition, int | None], horizon_us: int
) -> Sorted:
    found = Sorted([], defaultdict(set), [], {}, defaultdict(int))
    for r in records:
        found.moves[(r.topic, r.partition)] = (expected.get((r.topic, r.partition)), r.offset + 1)
        event = decode(r)
        if isinstance(event, str):
            found.outcomes["dead_letter"] += 1
            found.letters.append(letter(r, event))
        elif to_micros(event.timestamp) < horizon_us:
            # Ingest refuses these; a replay of an old topic or another producer may still
            # send them. Kept, not counted: they are past the purge.
            found.outcomes["expired"] += 1
            found.letters.append(letter(r, _expired(horizon_us)))
        else:
            found.fresh.append(event)
            found.partitions[(event.project_id, event.person_id)].add((r.topic, r.partition))
    return found


def decode(r: SourceRecord) -> CanonicalEvent | str:
    """The record's event, or why it is a dead letter."""
    try:
        if r.value is None:
            raise WireError("record has no value")
        return CanonicalEvent.from_json(r.value)
    except WireError as exc:
        log.warning("dead letter %s[%d]@%d: %s", r.topic, r.partition, r.offset, exc)
        return str(exc)


def letter(r: SourceRecord, reason: str) -> DeadLetter:
    return DeadLetter(r.topic, r.partition, r.offset, r.key, r.value, reason)


def _expired(horizon_us: int) -> str:
    return f"expired: older than the retention horizon ({format_time(from_micros(horizon_us))})"


@dataclass(frozen=True, slots=True)
class Applied:
    """A committed batch: what it read, stored and evaluated of persons of one id whom the
    person cache may hold; its offsets and outcomes; the persons and ids the cache must
    forget (of several ids, or whose ids changed); what its claims linked and refused."""

    fresh: list[CanonicalEvent]
    before: Histories
    added: dict[PersonKey, list[PersonEvent]]
    evaluated: Evaluated
    moves: dict[Partition, tuple[int | None, int]]
    outcomes: dict[str, int]
    forget: set[PersonKey] = field(default_factory=set)
    relinked: linking.Relinked = field(default_factory=linking.Relinked)

    @property
    def committed(self) -> dict[Partition, int]:
        """Each partition's next offset, now stored."""
        return {p: new for p, (_, new) in self.moves.items()}


async def apply_batch(
    session: Session,
    group_id: str,
    records: Sequence[SourceRecord],
    expected: Mapping[Partition, int | None],
    horizon_us: int,
    cache: PersonCache,
    now_us: int,
    topic_partitions: Sequence[int] = (),
) -> Applied:
    """Apply the records in the session's transaction, the partitions' offsets moved from
    ``expected`` (``StaleOffsets`` if another consumer moved them), and the signals of the
    partitions held (``expected``'s and the records'). ``topic_partitions``: the events
    topic's partitions, which decide who owns an id (empty: this process owns every id)."""
    timing.mark(None)
    batch = sort_records(records, expected, horizon_us)
    timing.mark("sort")
    held = {p for _, p in {*expected, *batch.moves}}
    owner = linking.Owner(tuple(topic_partitions), frozenset(held))
    await offsets.hold_offsets(session, group_id, expected)
    taken = await signals.take(session, owner.topic, sorted(held))
    timing.mark("hold+take")
    await add_dead_letters(session, batch.letters, now_us)
    projects = {project for project, _ in batch.partitions} | {s.project_id for s in taken}
    active = await funnels.active_funnels(session, projects) if projects else []
    evaluators = {f.id: Evaluator(f.definition) for f in active}
    # Read before writing: what the batch adds is in hand already, and a person seen for the
    # first time costs one empty index probe instead of reading rows back. Only as far back
    # as the batch's events can change anything, and only for persons with an event that
    # concerns some funnel; persons the cache holds are not read at all. Persons of several
    # ids are read after writing, all their ids' events at once (``linking``).
    timing.mark("funnels")
    since, concerned = reevaluate.read_since(batch.fresh, active, evaluators, horizon_us)
    claims = linking.batch_claims(batch.fresh)
    known = (
        await identities.known(session, batch.partitions, linking.claim_anons(claims))
        if batch.fresh
        else identities.Known()
    )
    timing.mark("known")
    before = await load_histories(
        session, {k: s for k, s in since.items() if not known.tangled(k)}, cache, active
    )
    timing.mark("load")
    added = await events.store_events(session, batch.fresh)
    timing.mark("store")
    resolve_ids = {(s.project_id, s.person_id) for s in taken if s.reason == linking.RESOLVE}
    relinked = await linking.relink(session, owner, claims, added, known, resolve_ids)
    timing.mark("relink")
    wanted = _wanted(since, concerned, batch.partitions, known, relinked, taken, horizon_us)
    everywhere = set(batch.moves) or {(owner.topic, p) for p in held}
    persons = await linking.persons_now(
        session, wanted.bounds, known, batch.partitions.keys(), relinked
    )
    timing.mark("persons_now")
    merged = await linking.merged_persons(
        session, owner, wanted, active, everywhere, cache, added, persons
    )
    timing.mark("merged")
    await linking.demote(session, relinked.demoted(), active, now_us)
    plain = _plain(before, added, known, relinked, merged)
    groups = reevaluate.groups(
        active,
        evaluators,
        Histories(
            {**plain.before.events, **merged.events},
            {**plain.before.since, **merged.since},
            {**plain.before.cached, **merged.cached},
        ),
        {**plain.added, **merged.added},
        {**concerned, **merged.concerned},
        merged.events.keys(),
    )
    timing.mark("groups")
    changed, evaluated = await _save_groups(session, groups, now_us, merged.ids)
    timing.mark("save")
    partitions = {**batch.partitions, **merged.partitions}
    for project, id_ in relinked.demoted():
        changed |= {(f.id, project, id_) for f in active if f.project_id == project}
        partitions.setdefault((project, id_), everywhere)
    await signals.send(session, [*relinked.signals, *merged.signals])
    await progress.count_changes(session, changes.counted(changed, partitions))
    await offsets.advance_offsets(session, group_id, batch.moves, now_us)
    timing.mark("tail")
    stored = sum(len(new) for new in added.values())
    outcomes = {**batch.outcomes, "stored": stored, "duplicate": len(batch.fresh) - stored}
    read = Histories(
        {**plain.before.events, **merged.events},
        {**plain.before.since, **merged.since},
        {**plain.before.cached, **merged.cached},
    )
    return Applied(
        batch.fresh, read, {**plain.added, **merged.added}, dict(evaluated), batch.moves,
        outcomes, plain.forget, relinked,
    )  # fmt: skip


def _wanted(
    since: Mapping[PersonKey, int],
    concerned: Mapping[PersonKey, set[str]],
    partitions: Mapping[PersonKey, set[Partition]],
    known: identities.Known,
    relinked: linking.Relinked,
    taken: Sequence[Signal],
    horizon_us: int,
) -> linking.Wanted:
    """Persons to evaluate as persons of several ids: those of the batch's ids that are
    linked or have links, those signalled, and those that gained or lost ids (from the
    horizon on: links are retroactive)."""
    wanted = linking.Wanted()
    for key, bound in since.items():
        if known.tangled(key) or key in relinked.ids:
            wanted.add(key, bound, concerned.get(key, ()), partitions.get(key, ()))
    for s in taken:
        if s.reason == linking.EVALUATE:
            bound = max(s.since_us, horizon_us)
            wanted.add((s.project_id, s.person_id), bound, (), (), fresh=True)
    for key in relinked.affected():
        wanted.add(key, horizon_us, (), (), fresh=True)
    return wanted


@dataclass(frozen=True, slots=True)
class _Plain:
    """What the batch read and stored of persons of one id, untouched by its claims."""

    before: Histories
    added: dict[PersonKey, list[PersonEvent]]
    forget: set[PersonKey]


def _plain(
    before: Histories,
    added: dict[PersonKey, list[PersonEvent]],
    known: identities.Known,
    relinked: linking.Relinked,
    merged: linking.Merged,
) -> _Plain:
    if not known.links and not known.members and not relinked.ids and not merged.events:
        return _Plain(before, added, set())
    drop = {k for k in added if known.tangled(k) or k in relinked.ids or k in merged.events}
    drop |= relinked.ids
    return _Plain(
        Histories(
            {k: v for k, v in before.events.items() if k not in drop},
            {k: v for k, v in before.since.items() if k not in drop},
            {k: v for k, v in before.cached.items() if k not in drop},
        ),
        {k: v for k, v in added.items() if k not in drop},
        drop,
    )


async def load_histories(
    session: Session,
    since_us: Mapping[PersonKey, int],
    cache: PersonCache,
    funnels: Sequence[ActiveFunnel] = (),
) -> Histories:
    """The stored events of these persons from (at least) their ``since_us`` on, less what
    the ``funnels`` look back (``reevaluate.lookbacks``): from the cache when it holds them
    from there on, else from the database."""
    found, reads = reevaluate.read_plan(since_us, cache, reevaluate.lookbacks(funnels))
    for read in reads:
        history = await events.person_events(session, read.project_id, read.persons, read.since)
        found.events.update(((read.project_id, p), got) for p, got in history.items())
    return found


async def _save_groups(
    session: Session,
    groups: Iterable[Group],
    now_us: int,
    ids: Mapping[PersonKey, list[str]],
) -> tuple[set[tuple[str, str, str]], Evaluated]:
    """Save each funnel's progress (all its groups at once, their stored rows read in one
    round for every funnel) and announce its advances; return the (funnel, project, person)
    whose stored entries or touches changed, and what is now stored per person."""
    changed: set[tuple[str, str, str]] = set()
    evaluated: Evaluated = defaultdict(dict)
    listening: dict[str, set[str]] = {}
    by_funnel: dict[str, list[Group]] = defaultdict(list)
    for group in groups:
        by_funnel[group.funnel.id].append(group)
    wanted = [
        (g.funnel.id, g.since, people)
        for parts in by_funnel.values()
        for g in parts
        if (people := changes.persons_to_read(g.progress, g.first_seen, g.held))
    ]
    stored = await progress.stored_progress_of(session, wanted) if wanted else {}
    for parts in by_funnel.values():
        funnel, project = parts[0].funnel, parts[0].funnel.project_id
        named = {p: ids[(project, p)] for g in parts for p in g.progress if (project, p) in ids}
        diff = await _replace(
            session, funnel, parts, stored.get(funnel.id, changes.Stored()), now_us, named
        )
        changed.update((funnel.id, project, person) for person in diff.changed)
        for group in parts:
            for person, now in group.stored().items():
                evaluated[(project, person)][funnel.key] = now
        if diff.advances and project not in listening:
            listening[project] = await outbox.subscribed_types(session, project)
        found = messages.step_messages(funnel, diff.advances, listening.get(project, ()), named)
        announced = await outbox.existing(session, [t for m in found for t in m.twins])
        for message in found:
            if not announced.intersection(message.twins):
                await outbox.enqueue(session, message, now_us)
    return changed, evaluated


async def replace_progress(
    session: Session,
    funnel: ActiveFunnel,
    evaluated: Mapping[str, PersonProgress],
    since_us: int,
    now_us: int,
    first_seen: AbstractSet[str] = frozenset(),
    held: Mapping[str, PersonProgress] | None = None,
    ids: Mapping[str, Sequence[str]] | None = None,
) -> changes.ProgressChanges:
    """Make these persons' stored entries (t0 >= since), touches and pending re-marketing
    timers equal to what was ``evaluated``; return what changed (see ``changes.diff``).
    ``ids``: the ids of persons of several; a timer fired under any of them is not
    pending again."""
    group = Group(funnel, since_us, dict(evaluated), set(first_seen), dict(held or {}))
    people = changes.persons_to_read(evaluated, first_seen, held)
    stored = await progress.stored_progress(session, funnel.id, people, since_us)
    return await _replace(session, funnel, [group], stored, now_us, ids or {})


async def _replace(
    session: Session,
    funnel: ActiveFunnel,
    parts: Sequence[Group],
    stored: changes.Stored,
    now_us: int,
    ids: Mapping[str, Sequence[str]],
) -> changes.ProgressChanges:
    """Replace the funnel's stored progress of the groups' persons (disjoint, each from its
    group's bound on; ``stored``: their rows as stored) with one write of each kind."""
    evaluated = {p: found for g in parts for p, found in g.progress.items()}
    first_seen = {p for g in parts for p in g.first_seen}
    held = {p: found for g in parts for p, found in g.held.items()}
    diff = changes.diff(evaluated, stored, first_seen, held)
    await progress.save_progress(session, funnel.id, diff, now_us)
    for group in parts:
        await _replace_timers(session, funnel, group, now_us, ids)
    return diff


async def _replace_timers(
    session: Session,
    funnel: ActiveFunnel,
    group: Group,
    now_us: int,
    ids: Mapping[str, Sequence[str]],
) -> None:
    """The group's pending re-marketing timers become what its evaluation left pending; a
    timer fired under any of a person's ``ids`` is not pending again."""
    grace_s = funnel.graces()
    if not grace_s:
        return
    pending = changes.pending_timers(group.progress, group.since, grace_s)
    others = {i: p for p, found in ids.items() if p in group.progress for i in found if i != p}
    if others:
        fired = await timers.fired_keys(session, funnel.id, sorted(others))
        done = {(others[i], *key) for i, key in fired}
        pending = [
            t for t in pending if (t.person_id, t.rule, t.entry_t0, t.occurrence) not in done
        ]
    may_have = sorted(p for p in group.progress if p not in group.first_seen)
    await timers.replace_pending(session, funnel.id, may_have, group.since, pending, now_us)
