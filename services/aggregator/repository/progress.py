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
    values,
)
from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator.changes import ProgressChanges, Stored
from services.aggregator.repository.scan import CHUNK, delete_ids, per_person
from shared.db import bulk_insert, insert_ignoring, is_postgres
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
)
TOUCH_COLUMNS = ("funnel_id", "person_id", "ts_us", "seq", "values")


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
    """Delete the rows that changed and insert what replaces them; log who changed."""
    await delete_ids(session, funnel_entries, changes.entry_ids)
    await delete_ids(session, funnel_touches, changes.touch_ids)
    entry_keys = [{"person_id": p, "t0_us": t0} for p, t0 in changes.entry_keys]
    touch_keys = [{"person_id": p, "ts_us": ts, "seq": seq} for p, ts, seq in changes.touch_keys]
    await _delete_keys(session, funnel_entries, funnel_id, entry_keys)
    await _delete_keys(session, funnel_touches, funnel_id, touch_keys)
    await bulk_insert(
        session,
        funnel_entries,
        ENTRY_COLUMNS,
        [
            (funnel_id, person, e.t0, e.reached, e.step_times, e.disqualified, e.step_values)
            for person, e in changes.entries
        ],
    )
    await bulk_insert(
        session,
        funnel_touches,
        TOUCH_COLUMNS,
        [(funnel_id, person, t.ts, t.seq, t.values) for person, t in changes.touches],
    )
    await log_changed(session, [(funnel_id, p) for p in sorted(changes.changed)], now_us)


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
