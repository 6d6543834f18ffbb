"""What the columnar replica reads from the database: the progress log (migration 0012) and
the stored entries and touches of a funnel, whole or for some persons."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import BigInteger, Text, cast, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import is_postgres
from shared.funnel import Entry, Touch
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


def _as_text(column: Any) -> Any:
    return cast(column, Text)


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


async def progress_of(
    session: AsyncSession,
    funnel_id: str,
    persons: Sequence[str] | None,
    between: tuple[str | None, str] | None = None,
) -> tuple[dict[str, list[Entry]], dict[str, list[Touch]]]:
    """All stored entries and touches of the funnel's ``persons``, or of the persons in
    ``between`` (after the first id, if any, up to the second)."""
    e, t = funnel_entries.c, funnel_touches.c
    entries: dict[str, list[Entry]] = defaultdict(list)
    touches: dict[str, list[Touch]] = defaultdict(list)
    chunks: list[Sequence[str] | None] = [None]
    if persons:
        chunks = [persons[i : i + CHUNK] for i in range(0, len(persons), CHUNK)]
    for chunk in chunks:
        of_entries = select(
            e.person_id, e.t0_us, _as_text(e.step_times), e.disqualified, _as_text(e.step_values)
        ).where(e.funnel_id == funnel_id)
        of_touches = select(t.person_id, t.ts_us, t.seq, _as_text(t["values"])).where(
            t.funnel_id == funnel_id
        )
        if chunk is not None:
            of_entries = of_entries.where(e.person_id.in_(chunk))
            of_touches = of_touches.where(t.person_id.in_(chunk))
        elif between is not None:
            low, high = between
            of_entries = of_entries.where(e.person_id <= high)
            of_touches = of_touches.where(t.person_id <= high)
            if low is not None:
                of_entries = of_entries.where(e.person_id > low)
                of_touches = of_touches.where(t.person_id > low)
        elif persons is not None:
            break  # no persons asked for
        for person, t0, times, disqualified, values in await session.execute(of_entries):
            decoded = orjson.loads(values)
            entries[person].append(
                Entry(
                    t0,
                    tuple(orjson.loads(times)),
                    disqualified,
                    {k: tuple(v) for k, v in decoded.items()} if decoded else {},
                )
            )
        for person, ts, seq, values in await session.execute(of_touches):
            touches[person].append(Touch(ts, seq, orjson.loads(values)))
    return entries, touches
