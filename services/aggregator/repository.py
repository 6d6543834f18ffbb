"""The aggregator's SQL: events, funnels, per-person progress and consumer offsets.

Functions take the caller's session and never commit: one poll batch is one transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from sqlalchemy import ARRAY, Text, and_, bindparam, delete, func, select, text, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator.engine import PersonEvent, PersonProgress
from shared.db import asyncpg_connection, bulk_insert, insert_ignoring, is_postgres
from shared.events import CanonicalEvent, to_micros
from shared.funnel import Entry, FunnelDefinition, Touch, definition_from_doc
from shared.keys import now_us
from shared.tables import (
    consumer_offsets,
    dead_letters,
    events,
    funnel_changes,
    funnel_entries,
    funnel_touches,
    funnels,
    remarketing_timers,
)

CHUNK = 500
PersonKey = tuple[str, str]  # (project_id, person_id)


@dataclass(frozen=True, slots=True)
class ActiveFunnel:
    id: str
    project_id: str
    name: str
    definition: FunnelDefinition
    backfill_cursor: str | None
    backfill_done: bool
    version: int

    @property
    def key(self) -> tuple[str, int]:
        """Identifies the funnel's stored progress: a redefinition starts it afresh."""
        return (self.id, self.version)

    def covers(self, person_id: str) -> bool:
        """Whether this person's progress is kept live (backfill has passed them)."""
        return self.backfill_done or (
            self.backfill_cursor is not None and person_id <= self.backfill_cursor
        )


async def store_events(
    session: AsyncSession, batch: Sequence[CanonicalEvent]
) -> dict[PersonKey, list[PersonEvent]]:
    """Insert events not seen before (by project and event id); return, per person who had
    any, the events stored by this call, as stored (the last of a batch's twins)."""
    if not batch:
        return {}
    unique = {(e.project_id, e.event_id): e for e in batch}
    if is_postgres(session):
        found: Iterable[Any] = await _copy_events(session, list(unique.values()))
    else:
        stmt = (
            insert_ignoring(session, events)
            .on_conflict_do_nothing(index_elements=["project_id", "event_id"])
            .returning(events.c.project_id, events.c.event_id)
        )
        found = await session.execute(
            stmt, [dict(zip(EVENT_COLUMNS, _event_row(e), strict=True)) for e in unique.values()]
        )
    stored: dict[PersonKey, list[PersonEvent]] = defaultdict(list)
    for project_id, event_id in found:
        e = unique[(project_id, event_id)]
        stored[(project_id, e.person_id)].append(
            PersonEvent(event_id, to_micros(e.timestamp), e.event, e.properties, e.context)
        )
    return stored


EVENT_COLUMNS = (
    "project_id",
    "event_id",
    "person_id",
    "name",
    "ts_us",
    "received_at_us",
    "properties",
    "context",
    "user_id",
    "anonymous_id",
)


def _event_row(e: CanonicalEvent) -> tuple[Any, ...]:
    return (
        e.project_id,
        e.event_id,
        e.person_id,
        e.event,
        to_micros(e.timestamp),
        to_micros(e.received_at),
        e.properties,
        e.context,
        e.user_id,
        e.anonymous_id,
    )


async def _copy_events(session: AsyncSession, batch: list[CanonicalEvent]) -> list[Any]:
    """PostgreSQL: COPY the batch into a transaction-scoped scratch table, then move what is
    new into ``events`` in one statement (a multi-row INSERT costs far more per row)."""
    driver = await asyncpg_connection(session)
    await driver.execute(
        "CREATE TEMP TABLE IF NOT EXISTS incoming_events"
        " (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    rows = [_event_row(e) for e in batch]
    await bulk_insert(session, events, EVENT_COLUMNS, rows, into="incoming_events")
    return list(await driver.fetch(_MOVE_NEW_EVENTS))


_EVENT_COLUMN_LIST = ", ".join(EVENT_COLUMNS)  # fixed names, no input
_MOVE_NEW_EVENTS = (
    f"INSERT INTO events ({_EVENT_COLUMN_LIST})"  # noqa: S608
    f" SELECT {_EVENT_COLUMN_LIST} FROM incoming_events"
    " ON CONFLICT (project_id, event_id) DO NOTHING RETURNING project_id, event_id"
)


async def person_events(
    session: AsyncSession, project_id: str, persons: Iterable[str], since_us: int
) -> dict[str, list[PersonEvent]]:
    """These persons' stored events from ``since_us`` on."""
    found: dict[str, list[PersonEvent]] = defaultdict(list)
    people = sorted(set(persons))
    columns = ("person_id", "event_id", "ts_us", "name", "properties", "context")
    stmt = _per_person(session, events, columns, "ts_us", project_id=project_id)
    for i in range(0, len(people), CHUNK):
        for r in await session.execute(stmt, {"people": people[i : i + CHUNK], "since": since_us}):
            found[r.person_id].append(
                PersonEvent(r.event_id, r.ts_us, r.name, r.properties, r.context)
            )
    return found


def _per_person(
    session: AsyncSession, table: Any, columns: Sequence[str], time: str, **scope: str
) -> Any:
    """``columns`` of ``table``'s rows in ``scope`` (column = value) of the persons bound
    as ``people`` whose ``time`` column is at least the bound ``since``, found by one index
    range scan per person (on the scope, person and time) whatever the statistics say.

    With ``person_id IN (...)``, PostgreSQL on a young, unanalyzed table (and, with a time
    bound as well, on one with young statistics) read the whole scope (every event of the
    project, every row of the funnel) once per batch. So, on PostgreSQL, a LATERAL subquery
    per person, which OFFSET 0 keeps from being flattened into a hash join.
    """
    wanted = [table.c[c] for c in columns]
    where = [table.c[k] == v for k, v in scope.items()]
    where.append(table.c[time] >= bindparam("since"))
    if not is_postgres(session):
        return select(*wanted).where(
            *where, table.c.person_id.in_(bindparam("people", expanding=True))
        )
    people = bindparam("people", type_=ARRAY(Text))
    person = func.unnest(people).table_valued("person_id").render_derived()
    found = (
        select(*wanted).where(*where, table.c.person_id == person.c.person_id).offset(0).lateral()
    )
    return select(found).select_from(person).join(found, true())


_FUNNEL_COLUMNS = (
    funnels.c.id,
    funnels.c.project_id,
    funnels.c.name,
    funnels.c.definition,
    funnels.c.backfill_cursor,
    funnels.c.backfill_done,
    funnels.c.version,
)


async def active_funnels(session: AsyncSession, project_ids: Iterable[str]) -> list[ActiveFunnel]:
    """Funnels of these projects, share-locked (PostgreSQL) against concurrent redefinition."""
    stmt = (
        select(*_FUNNEL_COLUMNS)
        .where(funnels.c.project_id.in_(sorted(set(project_ids))))
        .order_by(funnels.c.id)
    )
    if is_postgres(session):
        stmt = stmt.with_for_update(read=True)
    return [_funnel(r) for r in await session.execute(stmt)]


async def lock_pending_backfill(session: AsyncSession) -> ActiveFunnel | None:
    """One funnel whose backfill is not done, locked for this transaction (PostgreSQL)."""
    stmt = select(*_FUNNEL_COLUMNS).where(funnels.c.backfill_done.is_(False)).limit(1)
    if is_postgres(session):
        stmt = stmt.with_for_update()
    row = (await session.execute(stmt)).first()
    return _funnel(row) if row else None


def _funnel(r: Any) -> ActiveFunnel:
    return ActiveFunnel(
        r.id,
        r.project_id,
        r.name,
        definition_from_doc(r.definition),
        r.backfill_cursor,
        r.backfill_done,
        r.version,
    )


@dataclass(frozen=True, slots=True)
class Advance:
    """An entry that got further than it was stored: steps ``before + 1 .. after`` are new."""

    person_id: str
    entry: Entry
    before: int


# Tuples and dicts of tuples are written as JSON arrays and objects.
ENTRY_COLUMNS = (
    "funnel_id",
    "person_id",
    "t0_us",
    "reached",
    "step_times",
    "disqualified",
    "step_values",
)
TOUCH_COLUMNS = ("funnel_id", "person_id", "ts_us", "seq", "values")


async def replace_progress(
    session: AsyncSession,
    funnel_id: str,
    progress: Mapping[str, PersonProgress],
    since_us: int,
    grace_s: Mapping[str, int] | None = None,
    first_seen: AbstractSet[str] = frozenset(),
    held: Mapping[str, PersonProgress] | None = None,
) -> Replaced:
    """Make these persons' stored entries (t0 >= since), touches and pending re-marketing
    timers equal to ``progress``; return the entries that advanced and the persons whose
    entries or touches changed.

    Only rows that changed are written: a person with one new event usually changes one
    entry and adds one touch, however long their history. ``grace_s`` maps each
    re-marketing rule of the funnel to its grace period. Persons in ``first_seen`` have no
    stored event from ``since`` on other than those of this transaction, hence no stored
    progress either: their rows are written without looking for stored ones. For persons in
    ``held``, it is what is stored for them from ``since`` on (see known.py): compared
    without reading, and the rows that differ deleted by their keys.
    """
    held = held or {}
    unknown = sorted(p for p in progress if p not in first_seen and p not in held)
    stored_entries, stored_touches = await _stored(session, funnel_id, unknown, since_us)
    entries = [(_entry_key(person, e), e) for person in unknown for e in progress[person].entries]
    touches = [
        ((person, t.ts, t.seq, _canonical(dict(t.values))), t)
        for person in unknown
        for t in progress[person].touches
    ]
    before = _reached_before(stored_entries)
    new_entries = [(k[0], e) for k, e in _unmatched(entries, stored_entries)]
    new_touches = [(k[0], t) for k, t in _unmatched(touches, stored_touches)]
    for person in sorted(first_seen & progress.keys()):
        new_entries.extend((person, e) for e in progress[person].entries)
        new_touches.extend((person, t) for t in progress[person].touches)
    changed = {k[0] for k, ids in stored_entries.items() if ids}
    changed |= {k[0] for k, ids in stored_touches.items() if ids}
    stale = Stale()
    for person in sorted(p for p in progress if p in held and p not in first_seen):
        was, now = held[person], progress[person]
        for e in was.entries:
            if not e.disqualified:
                before[(person, e.t0)] = max(before.get((person, e.t0), 0), e.reached)
        for t0, stored, fresh in _entry_changes(was.entries, now.entries):
            if stored:
                stale.entries.append({"person_id": person, "t0_us": t0})
            new_entries.extend((person, e) for e in fresh)
        for (ts, seq), stored, touch in _touch_changes(was.touches, now.touches):
            if stored:
                stale.touches.append({"person_id": person, "ts_us": ts, "seq": seq})
            if touch is not None:
                new_touches.append((person, touch))
    changed |= {person for person, _ in new_entries} | {person for person, _ in new_touches}
    changed |= {row["person_id"] for row in [*stale.entries, *stale.touches]}
    await _delete_ids(session, funnel_entries, [i for ids in stored_entries.values() for i in ids])
    await _delete_ids(session, funnel_touches, [i for ids in stored_touches.values() for i in ids])
    await stale.delete(session, funnel_id)
    await bulk_insert(
        session,
        funnel_entries,
        ENTRY_COLUMNS,
        [
            (funnel_id, person, e.t0, e.reached, e.step_times, e.disqualified, e.step_values)
            for person, e in new_entries
        ],
    )
    await bulk_insert(
        session,
        funnel_touches,
        TOUCH_COLUMNS,
        [(funnel_id, person, t.ts, t.seq, t.values) for person, t in new_touches],
    )
    if grace_s:
        known = sorted(p for p in progress if p not in first_seen)
        await _replace_timers(session, funnel_id, progress, known, since_us, grace_s)
    advances = [
        Advance(person, e, before.get((person, e.t0), 0))
        for person, e in new_entries
        if not e.disqualified and e.reached > before.get((person, e.t0), 0)
    ]
    return Replaced(advances, changed)


def _entry_changes(
    was: Sequence[Entry], now: Sequence[Entry]
) -> list[tuple[int, bool, list[Entry]]]:
    """Per start instant whose entries differ: that instant, whether it has stored entries
    (all of them are replaced; two entries rarely start at the same instant) and the
    entries it now has. Both are in time order; what they share at the start (usually all
    but the last few) is skipped, back to a start instant boundary."""
    n = _shared_prefix(was, now)
    differing = {e.t0 for e in (*was[n : n + 1], *now[n : n + 1])}
    while n and was[n - 1].t0 in differing:
        n -= 1
    was, now = was[n:], now[n:]
    old: dict[int, list[Entry]] = defaultdict(list)
    new: dict[int, list[Entry]] = defaultdict(list)
    for e in was:
        old[e.t0].append(e)
    for e in now:
        new[e.t0].append(e)
    return [
        (t0, t0 in old, new.get(t0, []))
        for t0 in sorted(old.keys() | new.keys())
        if not _same_entries(old.get(t0, []), new.get(t0, []))
    ]


def _same_entries(a: list[Entry], b: list[Entry]) -> bool:
    if len(a) != len(b):
        return False
    rest = list(b)
    for e in a:
        if e not in rest:
            return False
        rest.remove(e)
    return True


def _touch_changes(
    was: Sequence[Touch], now: Sequence[Touch]
) -> list[tuple[tuple[int, int], bool, Touch | None]]:
    """Touches that differ, by instant and sequence number (unique per person): whether one
    is stored there, and what is to be stored there now. Both are in time order; what they
    share at the start is skipped."""
    n = _shared_prefix(was, now)
    was, now = was[n:], now[n:]
    old = {(t.ts, t.seq): t for t in was}
    new = {(t.ts, t.seq): t for t in now}
    return [
        (k, k in old, new.get(k))
        for k in sorted(old.keys() | new.keys())
        if old.get(k) != new.get(k)
    ]


def _shared_prefix(a: Sequence[Any], b: Sequence[Any]) -> int:
    """How many leading items ``a`` and ``b`` have in common."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass(slots=True)
class Stale:
    """Stored rows to delete by key: entries by start instant, touches by instant and seq."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    touches: list[dict[str, Any]] = field(default_factory=list)

    async def delete(self, session: AsyncSession, funnel_id: str) -> None:
        await _delete_keys(session, funnel_entries, funnel_id, self.entries)
        await _delete_keys(session, funnel_touches, funnel_id, self.touches)


async def _delete_keys(
    session: AsyncSession, table: Any, funnel_id: str, rows: list[dict[str, Any]]
) -> None:
    """Delete the funnel's rows whose columns equal those of one of ``rows`` (column name
    -> value, the same columns in every row)."""
    if rows:
        match = [table.c[column] == bindparam(column) for column in rows[0]]
        await session.execute(delete(table).where(table.c.funnel_id == funnel_id, *match), rows)


@dataclass(frozen=True, slots=True)
class Replaced:
    advances: list[Advance]
    changed: set[str]  # persons whose stored entries or touches changed


async def count_changes(session: AsyncSession, changed: Iterable[tuple[str, str, int]]) -> None:
    """Add one to each (funnel, topic, partition) change counter (see migration 0005)."""
    rows = [
        {"funnel_id": f, "topic": t, "partition": p, "changes": 1} for f, t, p in sorted(changed)
    ]
    if not rows:
        return
    stmt = insert_ignoring(session, funnel_changes)
    stmt = stmt.on_conflict_do_update(
        index_elements=["funnel_id", "topic", "partition"],
        set_={"changes": funnel_changes.c.changes + 1},
    )
    await session.execute(stmt, rows)


EntryKey = tuple[str, int, str, bool, str]
TouchKey = tuple[str, int, int, str]


def _canonical(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _entry_key(person: str, e: Entry) -> EntryKey:
    values = {p: list(v) for p, v in e.step_values.items()}
    return (person, e.t0, _canonical(list(e.step_times)), e.disqualified, _canonical(values))


async def _stored(
    session: AsyncSession, funnel_id: str, people: list[str], since_us: int
) -> tuple[dict[EntryKey, list[int]], dict[TouchKey, list[int]]]:
    """Ids of these persons' stored rows from ``since_us`` on, grouped by content."""
    entries: dict[EntryKey, list[int]] = defaultdict(list)
    touches: dict[TouchKey, list[int]] = defaultdict(list)
    entry_columns = ("id", "person_id", "t0_us", "step_times", "disqualified", "step_values")
    touch_columns = ("id", "person_id", "ts_us", "seq", "values")
    of_entries = _per_person(session, funnel_entries, entry_columns, "t0_us", funnel_id=funnel_id)
    of_touches = _per_person(session, funnel_touches, touch_columns, "ts_us", funnel_id=funnel_id)
    for i in range(0, len(people), CHUNK):
        chunk = {"people": people[i : i + CHUNK], "since": since_us}
        for r in await session.execute(of_entries, chunk):
            times, values = _canonical(r.step_times), _canonical(r.step_values)
            entries[(r.person_id, r.t0_us, times, r.disqualified, values)].append(r.id)
        for r in await session.execute(of_touches, chunk):
            touches[(r.person_id, r.ts_us, r.seq, _canonical(r[4]))].append(r.id)
    return entries, touches


K = TypeVar("K")
V = TypeVar("V")


def _unmatched(desired: list[tuple[K, V]], stored: dict[K, list[int]]) -> list[tuple[K, V]]:
    """Desired rows with no stored twin; each stored twin found is kept (removed from
    ``stored``), so what remains in ``stored`` afterwards is to be deleted."""
    missing = []
    for key, value in desired:
        if stored.get(key):
            stored[key].pop()
        else:
            missing.append((key, value))
    return missing


def _reached_before(stored: Mapping[EntryKey, list[int]]) -> dict[tuple[str, int], int]:
    """How far each stored clean entry got, by (person, t0)."""
    before: dict[tuple[str, int], int] = {}
    for (person, t0, times, disqualified, _), ids in stored.items():
        if ids and not disqualified:
            before[(person, t0)] = max(before.get((person, t0), 0), len(orjson.loads(times)))
    return before


async def _delete_ids(session: AsyncSession, table: Any, ids: list[int]) -> None:
    for i in range(0, len(ids), CHUNK):
        await session.execute(delete(table).where(table.c.id.in_(ids[i : i + CHUNK])))


async def _replace_timers(
    session: AsyncSession,
    funnel_id: str,
    progress: Mapping[str, PersonProgress],
    people: Sequence[str],
    since_us: int,
    grace_s: Mapping[str, int],
) -> None:
    """Pending timers become exactly the live, uncancelled ones; fired ones stay as they are.

    A goal reached (even by a late event) removes the pending occurrences it cancels.
    ``people`` are those who may have stored timers.
    """
    for i in range(0, len(people), CHUNK):
        await session.execute(
            delete(remarketing_timers).where(
                remarketing_timers.c.funnel_id == funnel_id,
                remarketing_timers.c.person_id.in_(people[i : i + CHUNK]),
                remarketing_timers.c.status == "pending",
                remarketing_timers.c.entry_t0_us >= since_us,
            )
        )
    stamp = now_us()
    rows = [
        {
            "funnel_id": funnel_id,
            "person_id": person,
            "rule": t.rule,
            "entry_t0_us": t.entry_t0,
            "occurrence": t.occurrence,
            "due_us": t.due_us,
            "fire_at_us": t.due_us + grace_s.get(t.rule, 0) * 1_000_000,
            "status": "pending",
            "updated_at_us": stamp,
        }
        for person, p in progress.items()
        for t in p.timers
        if not t.cancelled and t.entry_t0 >= since_us
    ]
    if rows:
        await session.execute(
            insert_ignoring(session, remarketing_timers).on_conflict_do_nothing(
                index_elements=["funnel_id", "person_id", "rule", "entry_t0_us", "occurrence"]
            ),
            rows,
        )


async def backfill_persons(session: AsyncSession, funnel: ActiveFunnel, limit: int) -> list[str]:
    """The next persons of the funnel's project past its backfill cursor."""
    stmt = (
        select(events.c.person_id)
        .where(events.c.project_id == funnel.project_id)
        .distinct()
        .order_by(events.c.person_id)
        .limit(limit)
    )
    if funnel.backfill_cursor is not None:
        stmt = stmt.where(events.c.person_id > funnel.backfill_cursor)
    return list((await session.scalars(stmt)).all())


async def advance_backfill(
    session: AsyncSession, funnel_id: str, cursor: str | None, persons: int, done: bool
) -> None:
    await session.execute(
        update(funnels)
        .where(funnels.c.id == funnel_id)
        .values(
            backfill_cursor=cursor,
            backfill_done=done,
            backfill_persons=funnels.c.backfill_persons + persons,
        )
    )


async def delete_events_before(session: AsyncSession, horizon_us: int) -> int:
    result: Any = await session.execute(delete(events).where(events.c.ts_us < horizon_us))
    return int(result.rowcount or 0)


HOT_TABLES = ("events", "funnel_entries", "funnel_touches")


async def analyze_if_stale(session: AsyncSession) -> list[str]:
    """ANALYZE hot tables whose statistics lag far behind their size (PostgreSQL only).

    Autovacuum catches up within minutes; until then a young, fast-growing table has
    statistics that make the planner scan a whole funnel instead of looking persons up.
    """
    if not is_postgres(session):
        return []
    rows = await session.execute(
        text(
            "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
            " WHERE s.relname = ANY(:tables)"
            " AND s.n_mod_since_analyze > 1000 + 0.2 * GREATEST(c.reltuples, 0)"
        ),
        {"tables": list(HOT_TABLES)},
    )
    found = {name for (name,) in rows}
    stale = [name for name in HOT_TABLES if name in found]  # only our own, known names
    for name in stale:
        await session.execute(text(f"ANALYZE {name}"))
    return stale


async def load_offsets(
    session: AsyncSession, group_id: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    wanted = set(partitions)
    stmt = select(
        consumer_offsets.c.topic, consumer_offsets.c.partition, consumer_offsets.c.next_offset
    ).where(consumer_offsets.c.group_id == group_id)
    return {
        (r.topic, r.partition): r.next_offset
        for r in await session.execute(stmt)
        if (r.topic, r.partition) in wanted
    }


class StaleOffsets(Exception):
    """Another consumer moved a partition's stored offset: this batch must not commit."""


async def advance_offsets(
    session: AsyncSession,
    group_id: str,
    moves: Mapping[tuple[str, int], tuple[int | None, int]],
) -> None:
    """Compare-and-set each partition's next offset from ``expected`` to ``new``.

    A consumer that lost its partitions (a zombie after a long pause) fails here instead of
    applying records that the partition's new owner applies too.
    """
    stamp = now_us()
    for (topic, partition), (expected, new) in sorted(moves.items()):
        key = and_(
            consumer_offsets.c.group_id == group_id,
            consumer_offsets.c.topic == topic,
            consumer_offsets.c.partition == partition,
        )
        if expected is None:
            stmt = (
                insert_ignoring(session, consumer_offsets)
                .values(
                    group_id=group_id,
                    topic=topic,
                    partition=partition,
                    next_offset=new,
                    updated_at_us=stamp,
                )
                .on_conflict_do_nothing()
            )
        else:
            stmt = (
                update(consumer_offsets)
                .where(key, consumer_offsets.c.next_offset == expected)
                .values(next_offset=new, updated_at_us=stamp)
            )
        result: Any = await session.execute(stmt)
        if result.rowcount != 1:
            raise StaleOffsets(f"{topic}[{partition}] moved past {expected}")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that is kept aside, with the reason, instead of being applied."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    payload: bytes | None
    reason: str


async def add_dead_letters(session: AsyncSession, letters: Sequence[DeadLetter]) -> None:
    if not letters:
        return
    stamp = now_us()
    await session.execute(
        dead_letters.insert(),
        [
            {
                "topic": d.topic,
                "partition": d.partition,
                "offset": d.offset,
                "key": d.key,
                "payload": d.payload,
                "reason": storable_reason(d.reason),
                "created_at_us": stamp,
            }
            for d in letters
        ],
    )


def storable_reason(reason: str) -> str:
    """A reason any database stores: quoted values may hold NUL or what UTF-8 cannot encode."""
    text = reason[:2000].replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
