"""What the columnar replica reads from the database: the progress log (migration 0012) and
the stored entries and touches of a funnel with their bounds (migration 0013), as typed
columns, whole or for some persons."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Text, cast, delete, func, literal, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import asyncpg_connection, is_postgres
from shared.funnel import FunnelDefinition
from shared.tables import funnel_entries, funnel_touches, progress_log

CHUNK = 500  # persons per statement

LogRow = tuple[int, int | None, str, str]  # id, transaction id (PostgreSQL), funnel, person


async def log_position(session: AsyncSession) -> int:
    """Where a reader of the log starts so as to miss nothing committed after this call.

    SQLite commits one writer at a time, so ids grow in commit order: the last id. On
    PostgreSQL ids are taken before commit and can commit out of order: the oldest
    transaction still running (every transaction below it has ended, and its rows are
    visible to every later statement)."""
    if is_postgres(session):
        xmin = func.pg_snapshot_xmin(func.pg_current_snapshot())
        return int(await session.scalar(select(cast(cast(xmin, Text), BigInteger))) or 0)
    return int(await session.scalar(select(func.max(progress_log.c.id))) or 0)


async def log_since(session: AsyncSession, position: int) -> list[LogRow]:
    """The log's rows from ``position`` on (see :func:`log_position`): on PostgreSQL those of
    transactions from it on (rows already read come again while their transaction's
    neighbours run; readers skip their ids), on SQLite those after it."""
    c = progress_log.c
    where = c.tx >= position if is_postgres(session) else c.id > position
    stmt = select(c.id, c.tx, c.funnel_id, c.person_id).where(where).order_by(c.id)
    return [(int(i), tx, f, p) for i, tx, f, p in await session.execute(stmt)]


async def log_older_than(session: AsyncSession, before_us: int) -> bool:
    c = progress_log.c
    stmt = select(c.id).where(c.written_at_us < before_us).limit(1)
    return (await session.scalar(stmt)) is not None


async def purge_log(session: AsyncSession, before_us: int) -> int:
    """Delete the log's rows written before ``before_us``; how many."""
    result = await session.execute(
        delete(progress_log).where(progress_log.c.written_at_us < before_us)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def persons_after(
    session: AsyncSession, funnel_id: str, after: str | None, limit: int
) -> list[str]:
    """The next ``limit`` persons with entries in the funnel after ``after`` (in the
    database's order of ids), for loading a funnel a slice of persons at a time."""
    e = funnel_entries.c
    stmt = select(e.person_id).where(e.funnel_id == funnel_id).distinct()
    if after is not None:
        stmt = stmt.where(e.person_id > after)
    stmt = stmt.order_by(e.person_id).limit(limit)
    return list(await session.scalars(stmt))


Persons = Sequence[str] | tuple[str | None, str]  # some persons, or those in (after, up to]


def _scoped(stmt: Any, table: Any, funnel_id: str, persons: Persons) -> Any:
    stmt = stmt.where(table.c.funnel_id == funnel_id)
    if isinstance(persons, tuple):
        low, high = persons
        stmt = stmt.where(table.c.person_id <= high)
        return stmt if low is None else stmt.where(table.c.person_id > low)
    return stmt.where(table.c.person_id.in_(persons))


def _number(document: Any) -> Any:
    return cast(document.as_string(), BigInteger)


def entry_select(definition: FunnelDefinition) -> Any:
    """The stored entries as the replica stages them, typed by the database: person, t0,
    the bounds, reached, disqualified, the N step times, and the value property's N step
    values as text (with a value property). JSON is read inside the database, not here."""
    e = funnel_entries.c
    n = len(definition.steps)
    wanted = [e.person_id, e.t0_us, e.lft_us, e.rgt_us, e.reached, e.disqualified]
    wanted += [_number(e.step_times[k]) for k in range(n)]
    prop = definition.value_property
    if prop is not None:
        wanted += [e.step_values[(prop, k)].as_string() for k in range(n)]
    return select(*wanted)


def touch_selects(definition: FunnelDefinition) -> list[Any]:
    """The stored touches as the replica stages them, one row per touch and breakdown
    property it has a value of: person, the property's place, instant, previous and next
    touch's instants, value."""
    t = funnel_touches.c
    found = []
    for index, name in enumerate(definition.breakdowns):
        value = t["values"][name].as_string()
        found.append(
            select(
                t.person_id,
                literal(index),
                t.ts_us,
                _number(t.neighbours[(name, 0)]),
                _number(t.neighbours[(name, 1)]),
                value,
            ).where(value.is_not(None))
        )
    return found


async def entry_columns(
    session: AsyncSession, funnel_id: str, definition: FunnelDefinition, persons: Persons
) -> list[list[Any]]:
    """The persons' rows of :func:`entry_select`, one list per column."""
    stmt = entry_select(definition)
    width = len(stmt.selected_columns)
    return await _columns(session, [stmt], funnel_entries, funnel_id, persons, width)


async def touch_columns(
    session: AsyncSession, funnel_id: str, definition: FunnelDefinition, persons: Persons
) -> list[list[Any]]:
    """The persons' rows of :func:`touch_selects`, one list per column."""
    stmts = touch_selects(definition)
    return await _columns(session, stmts, funnel_touches, funnel_id, persons, 6)


async def _columns(
    session: AsyncSession,
    stmts: Sequence[Any],
    table: Any,
    funnel_id: str,
    persons: Persons,
    width: int,
) -> list[list[Any]]:
    chunks: list[Persons] = [persons]
    if not isinstance(persons, tuple):
        chunks = [persons[i : i + CHUNK] for i in range(0, len(persons), CHUNK)]
    found: list[list[Any]] = [[] for _ in range(width)]
    for stmt in stmts:
        for chunk in chunks:
            rows = (await session.execute(_scoped(stmt, table, funnel_id, chunk))).all()
            for mine, more in zip(found, zip(*rows, strict=True), strict=False):
                mine.extend(more)
    return found


async def copy_rows(
    session: AsyncSession,
    stmts: Sequence[Any],
    table: Any,
    funnel_id: str,
    persons: tuple[str | None, str],
    path: Path,
) -> None:
    """PostgreSQL only: the persons' rows of ``stmts`` written to ``path`` as CSV by
    ``COPY ... TO STDOUT`` (no row passes through Python)."""
    driver = await asyncpg_connection(session)
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    with path.open("wb") as out:
        for stmt in stmts:
            compiled = _scoped(stmt, table, funnel_id, persons).compile(
                dialect=dialect, compile_kwargs={"literal_binds": True}
            )
            await _uncancelled(driver.copy_from_query(str(compiled), output=out, format="csv"))


async def _uncancelled(work: Coroutine[Any, Any, Any]) -> None:
    """Run ``work`` to its end even when the caller is cancelled (then cancel the caller):
    a ``COPY ... TO STDOUT`` cut off half way leaves its connection in the copy protocol,
    and the session's rollback on it then waits for ever."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.wait({task})  # one slice's COPY: bounded
        raise


async def copy_progress(
    session: AsyncSession,
    funnel_id: str,
    definition: FunnelDefinition,
    persons: tuple[str | None, str],
    entries: Path,
    touches: Path,
) -> None:
    """The persons' entries and touches (``copy_rows``), each table to its own CSV file."""
    e = [entry_select(definition)]
    await copy_rows(session, e, funnel_entries, funnel_id, persons, entries)
    await copy_rows(session, touch_selects(definition), funnel_touches, funnel_id, persons, touches)
