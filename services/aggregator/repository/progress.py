"""Per-person progress rows (funnel entries and touches) and the funnels' change counters."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Text,
    bindparam,
    column,
    delete,
    func,
    insert,
    select,
    true,
    update,
    values,
)
from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator.changes import ProgressChanges, Stored
from services.aggregator.repository.scan import CHUNK, delete_ids, per_person
from shared.bounds import Neighbours, entry_bounds, touch_neighbours
from shared.db import bulk_insert, insert_ignoring, is_postgres
from shared.funnel import Entry, Touch
from shared.tables import (
    funnel_changes,
    funnel_entries,
    funnel_touches,
    progress_log,
    remarketing_timers,
)

# Tuples and dicts of tuples are written as JSON arrays and objects.
ENTRY_COLUMNS = (
    "funnel_id",
    "person_id",
    "t0_us",
    "reached",
    "step_times",
    "disqualified",
    "step_values",
    "lft_us",
    "rgt_us",
)
TOUCH_COLUMNS = ("funnel_id", "person_id", "ts_us", "seq", "values", "neighbours")
EVER = -(1 << 62)  # a time bound before every stored row


async def stored_progress(
    session: AsyncSession, funnel_id: str, people: Sequence[str], since_us: int
) -> Stored:
    """The ids of these persons' stored entries and touches from ``since_us`` on."""
    stored = Stored()
    entry_columns = ("id", "person_id", "t0_us", "step_times", "disqualified", "step_values")
    touch_columns = ("id", "person_id", "ts_us", "seq", "values")
    of_entries = per_person(session, funnel_entries, entry_columns, "t0_us", funnel_id=funnel_id)
    of_touches = per_person(session, funnel_touches, touch_columns, "ts_us", funnel_id=funnel_id)
    for i in range(0, len(people), CHUNK):
        chunk = {"people": people[i : i + CHUNK], "since": since_us}
        stored.add_entries(await session.execute(of_entries, chunk))
        stored.add_touches(await session.execute(of_touches, chunk))
    return stored


# A group of persons of one funnel whose stored progress is read from one instant on.
Wanted = tuple[str, int, Sequence[str]]  # (funnel id, since, persons)


async def stored_progress_of(session: AsyncSession, wanted: Sequence[Wanted]) -> dict[str, Stored]:
    """Per funnel, the ids of the stored entries and touches of the ``wanted`` persons, each
    from their group's instant on: one statement per table (per CHUNK persons) for all of a
    batch's funnels and bounds."""
    rows = [(f, p, since) for f, since, people in wanted for p in people]
    found: dict[str, Stored] = defaultdict(Stored)
    entry_columns = ("id", "person_id", "t0_us", "step_times", "disqualified", "step_values")
    touch_columns = ("id", "person_id", "ts_us", "seq", "values")
    for i in range(0, len(rows), CHUNK):
        chunk = rows[i : i + CHUNK]
        for table, columns, time, add in (
            (funnel_entries, entry_columns, "t0_us", Stored.add_entries),
            (funnel_touches, touch_columns, "ts_us", Stored.add_touches),
        ):
            by_funnel: dict[str, list[Any]] = defaultdict(list)
            for funnel_id, *row in await session.execute(
                _bounded(session, table, columns, time, chunk)
            ):
                by_funnel[funnel_id].append(row)
            for funnel_id, got in by_funnel.items():
                add(found[funnel_id], got)
    return found


def _bounded(
    session: AsyncSession,
    table: Any,
    columns: Sequence[str],
    time: str,
    rows: Sequence[tuple[str, str, int]],
) -> Any:
    """The funnel id and ``columns`` of ``table``'s rows of each (funnel, person, since) of
    ``rows`` whose ``time`` is at least its since. On PostgreSQL one index range scan per
    row (a LATERAL subquery kept from flattening by OFFSET 0, see ``scan.per_person``)."""
    c = table.c
    if not is_postgres(session):
        given = (
            values(column("f", Text), column("p", Text), column("s", BigInteger), name="wanted")
            .data(list(rows))
            .cte("wanted")
        )
        return select(c.funnel_id, *(c[k] for k in columns)).join_from(
            given,
            table,
            (c.funnel_id == given.c.f) & (c.person_id == given.c.p) & (c[time] >= given.c.s),
        )
    arrays = [
        bindparam("fs", [r[0] for r in rows], type_=ARRAY(Text)),
        bindparam("ps", [r[1] for r in rows], type_=ARRAY(Text)),
        bindparam("ss", [r[2] for r in rows], type_=ARRAY(BigInteger)),
    ]
    w = func.unnest(*arrays).table_valued("f", "p", "s").render_derived()
    found = (
        select(c.funnel_id, *(c[k] for k in columns))
        .where(c.funnel_id == w.c.f, c.person_id == w.c.p, c[time] >= w.c.s)
        .offset(0)
        .lateral()
    )
    return select(found).select_from(w).join(found, true())


async def save_progress(
    session: AsyncSession, funnel_id: str, changes: ProgressChanges, now_us: int
) -> None:
    """Delete the rows that changed and insert what replaces them; log who changed.

    Each changed person's bounds (``shared.bounds``, migration 0013) are computed over all of
    their rows once the batch's are in: the new rows are inserted with theirs, the kept rows
    whose bounds moved (a new entry that beats an earlier one, a touch between two) are
    updated, all in the caller's transaction."""
    await delete_ids(session, funnel_entries, changes.entry_ids)
    await delete_ids(session, funnel_touches, changes.touch_ids)
    entry_keys = [{"person_id": p, "t0_us": t0} for p, t0 in changes.entry_keys]
    touch_keys = [{"person_id": p, "ts_us": ts, "seq": seq} for p, ts, seq in changes.touch_keys]
    await _delete_keys(session, funnel_entries, funnel_id, entry_keys)
    await _delete_keys(session, funnel_touches, funnel_id, touch_keys)
    kept_entries, kept_touches = await _kept_rows(session, funnel_id, sorted(changes.changed))
    new_entries: dict[str, list[Entry]] = defaultdict(list)
    new_touches: dict[str, list[Touch]] = defaultdict(list)
    for person, e in changes.entries:
        new_entries[person].append(e)
    for person, t in changes.touches:
        new_touches[person].append(t)
    entry_rows, entry_moves = _entry_bounds(funnel_id, kept_entries, new_entries)
    touch_rows, touch_moves = _touch_neighbours(funnel_id, kept_touches, new_touches)
    await bulk_insert(session, funnel_entries, ENTRY_COLUMNS, entry_rows)
    await bulk_insert(session, funnel_touches, TOUCH_COLUMNS, touch_rows)
    if entry_moves:
        stmt = update(funnel_entries).where(funnel_entries.c.id == bindparam("key"))
        await session.execute(
            stmt.values(lft_us=bindparam("l"), rgt_us=bindparam("r")), entry_moves
        )
    if touch_moves:
        stmt = update(funnel_touches).where(funnel_touches.c.id == bindparam("key"))
        await session.execute(stmt.values(neighbours=bindparam("n")), touch_moves)
    await log_changed(session, [(funnel_id, p) for p in sorted(changes.changed)], now_us)


KeptEntry = tuple[int, Entry, int | None, int | None]  # id, entry (times only), bounds
KeptTouch = tuple[int, Touch, Neighbours]


async def _kept_rows(
    session: AsyncSession, funnel_id: str, people: Sequence[str]
) -> tuple[dict[str, list[KeptEntry]], dict[str, list[KeptTouch]]]:
    """These persons' stored rows (after the deletes) with what their bounds depend on."""
    entry_columns = ("id", "person_id", "t0_us", "step_times", "disqualified", "lft_us", "rgt_us")
    touch_columns = ("id", "person_id", "ts_us", "seq", "values", "neighbours")
    of_entries = per_person(session, funnel_entries, entry_columns, "t0_us", funnel_id=funnel_id)
    of_touches = per_person(session, funnel_touches, touch_columns, "ts_us", funnel_id=funnel_id)
    entries: dict[str, list[KeptEntry]] = defaultdict(list)
    touches: dict[str, list[KeptTouch]] = defaultdict(list)
    for i in range(0, len(people), CHUNK):
        chunk = {"people": people[i : i + CHUNK], "since": EVER}
        for id_, person, t0, times, disqualified, lft, rgt in await session.execute(
            of_entries, chunk
        ):
            entries[person].append((id_, Entry(t0, tuple(times), disqualified), lft, rgt))
        for id_, person, ts, seq, found, neighbours in await session.execute(of_touches, chunk):
            touches[person].append((id_, Touch(ts, seq, found), neighbours))
    return entries, touches


def _entry_bounds(
    funnel_id: str, kept: dict[str, list[KeptEntry]], new: dict[str, list[Entry]]
) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
    """The rows to insert (``ENTRY_COLUMNS``) and the kept rows' bounds to update."""
    rows: list[tuple[Any, ...]] = []
    moves: list[dict[str, Any]] = []
    for person in sorted(kept.keys() | new.keys()):
        old, fresh = kept.get(person, []), new.get(person, [])
        found = entry_bounds([k[1] for k in old] + fresh)
        for (id_, _, lft, rgt), b in zip(old, found, strict=False):
            if (b.left, b.right) != (lft, rgt):
                moves.append({"key": id_, "l": b.left, "r": b.right})
        for e, b in zip(fresh, found[len(old) :], strict=True):
            stored = (funnel_id, person, e.t0, e.reached, e.step_times, e.disqualified)
            rows.append((*stored, e.step_values, b.left, b.right))
    return rows, moves


def _touch_neighbours(
    funnel_id: str, kept: dict[str, list[KeptTouch]], new: dict[str, list[Touch]]
) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
    """The rows to insert (``TOUCH_COLUMNS``) and the kept rows' neighbours to update."""
    rows: list[tuple[Any, ...]] = []
    moves: list[dict[str, Any]] = []
    for person in sorted(kept.keys() | new.keys()):
        old, fresh = kept.get(person, []), new.get(person, [])
        found = touch_neighbours([k[1] for k in old] + fresh)
        for (id_, _, was), n in zip(old, found, strict=False):
            if n != was:
                moves.append({"key": id_, "n": n})
        for t, n in zip(fresh, found[len(old) :], strict=True):
            rows.append((funnel_id, person, t.ts, t.seq, t.values, n))
    return rows, moves


async def log_changed(session: AsyncSession, pairs: Sequence[tuple[str, str]], now_us: int) -> None:
    """Append (funnel, person) pairs whose stored rows this transaction changes to the
    progress log (migration 0012), with the transaction's id on PostgreSQL."""
    if not pairs:
        return
    stmt = insert(progress_log)
    if is_postgres(session):
        stmt = stmt.values(tx=func.pg_current_xact_id().cast(Text).cast(BigInteger))
    rows = [{"funnel_id": f, "person_id": p, "written_at_us": now_us} for f, p in pairs]
    for i in range(0, len(rows), CHUNK):
        await session.execute(stmt, rows[i : i + CHUNK])


async def _delete_keys(
    session: AsyncSession, table: Any, funnel_id: str, rows: list[dict[str, Any]]
) -> None:
    """Delete the funnel's rows whose columns equal those of one of ``rows`` (column name
    -> value, the same columns in every row)."""
    if rows:
        match = [table.c[column] == bindparam(column) for column in rows[0]]
        await session.execute(delete(table).where(table.c.funnel_id == funnel_id, *match), rows)


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


async def remove_persons(
    session: AsyncSession, funnel_ids: Sequence[str], person_ids: Sequence[str], now_us: int
) -> None:
    """Delete these ids' entries, touches and pending timers in these funnels: they are
    part of other persons now (their fired timers stay, standing for the persons')."""
    if not funnel_ids or not person_ids:
        return
    t = remarketing_timers.c
    for i in range(0, len(person_ids), CHUNK):
        people = list(person_ids[i : i + CHUNK])
        await log_changed(session, [(f, p) for f in funnel_ids for p in people], now_us)
        for table in (funnel_entries, funnel_touches):
            c = table.c
            await session.execute(
                delete(table).where(c.funnel_id.in_(funnel_ids), c.person_id.in_(people))
            )
        await session.execute(
            delete(remarketing_timers).where(
                t.funnel_id.in_(funnel_ids), t.person_id.in_(people), t.status == "pending"
            )
        )
