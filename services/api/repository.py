"""The API's SQL: funnels as resources and the stored entries reports read."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Text, cast, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.funnel import Entry, Touch
from shared.keys import now_us
from shared.tables import (
    events,
    funnel_changes,
    funnel_entries,
    funnel_touches,
    funnels,
    remarketing_timers,
)


@dataclass(frozen=True, slots=True)
class FunnelRow:
    id: str
    project_id: str
    name: str
    definition: dict[str, Any]
    version: int
    created_at_us: int
    updated_at_us: int
    backfill_done: bool
    backfill_persons: int


_COLUMNS = (
    funnels.c.id,
    funnels.c.project_id,
    funnels.c.name,
    funnels.c.definition,
    funnels.c.version,
    funnels.c.created_at_us,
    funnels.c.updated_at_us,
    funnels.c.backfill_done,
    funnels.c.backfill_persons,
)


async def create_funnel(session: AsyncSession, project_id: str, definition: dict[str, Any]) -> str:
    funnel_id = str(uuid.uuid4())
    stamp = now_us()
    await session.execute(
        funnels.insert().values(
            id=funnel_id,
            project_id=project_id,
            name=definition["name"],
            definition=definition,
            version=1,
            created_at_us=stamp,
            updated_at_us=stamp,
            backfill_cursor=None,
            backfill_done=False,
            backfill_persons=0,
        )
    )
    return funnel_id


async def get_funnel(session: AsyncSession, project_id: str, funnel_id: str) -> FunnelRow | None:
    row = (
        await session.execute(
            select(*_COLUMNS).where(funnels.c.id == funnel_id, funnels.c.project_id == project_id)
        )
    ).first()
    return FunnelRow(*row) if row else None


async def list_funnels(session: AsyncSession, project_id: str) -> list[FunnelRow]:
    stmt = select(*_COLUMNS).where(funnels.c.project_id == project_id).order_by(funnels.c.name)
    return [FunnelRow(*r) for r in await session.execute(stmt)]


async def all_funnels(session: AsyncSession) -> list[FunnelRow]:
    stmt = select(*_COLUMNS).order_by(funnels.c.project_id, funnels.c.name)
    return [FunnelRow(*r) for r in await session.execute(stmt)]


async def redefine_funnel(
    session: AsyncSession, funnel_id: str, definition: dict[str, Any]
) -> None:
    """Store a new definition and restart the backfill: stored progress is of the old one."""
    await _lock_funnel(session, funnel_id)
    await session.execute(
        delete(remarketing_timers).where(
            remarketing_timers.c.funnel_id == funnel_id, remarketing_timers.c.status == "pending"
        )
    )
    await session.execute(delete(funnel_entries).where(funnel_entries.c.funnel_id == funnel_id))
    await session.execute(delete(funnel_touches).where(funnel_touches.c.funnel_id == funnel_id))
    await session.execute(
        update(funnels)
        .where(funnels.c.id == funnel_id)
        .values(
            name=definition["name"],
            definition=definition,
            version=funnels.c.version + 1,
            updated_at_us=now_us(),
            backfill_cursor=None,
            backfill_done=False,
            backfill_persons=0,
        )
    )


async def rename_funnel(session: AsyncSession, funnel_id: str, definition: dict[str, Any]) -> None:
    """A change that does not affect counting (name, default count mode): no recompute."""
    await session.execute(
        update(funnels)
        .where(funnels.c.id == funnel_id)
        .values(name=definition["name"], definition=definition, updated_at_us=now_us())
    )


async def delete_funnel(session: AsyncSession, funnel_id: str) -> None:
    await _lock_funnel(session, funnel_id)
    await session.execute(
        delete(remarketing_timers).where(remarketing_timers.c.funnel_id == funnel_id)
    )
    await session.execute(delete(funnel_entries).where(funnel_entries.c.funnel_id == funnel_id))
    await session.execute(delete(funnel_touches).where(funnel_touches.c.funnel_id == funnel_id))
    await session.execute(delete(funnels).where(funnels.c.id == funnel_id))


async def _lock_funnel(session: AsyncSession, funnel_id: str) -> None:
    """Wait for the aggregator batches that read this funnel (they hold its row share-locked
    until they commit), so that the deletes that follow see every row they wrote; later
    batches wait for this transaction. Entries and touches have no foreign key to do this
    (migration 0007). SQLite runs one writer at a time: nothing to wait for there."""
    await session.execute(select(funnels.c.id).where(funnels.c.id == funnel_id).with_for_update())


async def project_persons(session: AsyncSession, project_id: str) -> int:
    stmt = select(func.count(func.distinct(events.c.person_id))).where(
        events.c.project_id == project_id
    )
    return int(await session.scalar(stmt) or 0)


def _as_text(column: Any) -> Any:
    """A JSON column as its text: decoding it here with orjson costs a third of the driver's
    per-value JSON hook on large reports."""
    return cast(column, Text)


async def entries_in_range(
    session: AsyncSession, funnel_id: str, start_us: int, end_us: int
) -> dict[str, list[Entry]]:
    e = funnel_entries.c
    stmt = select(
        e.person_id, e.t0_us, _as_text(e.step_times), e.disqualified, _as_text(e.step_values)
    ).where(e.funnel_id == funnel_id, e.t0_us >= start_us, e.t0_us < end_us)
    # Newest row first: of two entries alike in everything the count looks at (same step
    # times, other values), the report takes the first, as PostgreSQL's does (report_sql).
    stmt = stmt.order_by(e.id.desc())
    found: dict[str, list[Entry]] = defaultdict(list)
    result = await session.execute(stmt)
    for person, t0, times, disqualified, values in result:
        decoded = orjson.loads(values)
        found[person].append(
            Entry(
                t0,
                tuple(orjson.loads(times)),
                disqualified,
                {k: tuple(v) for k, v in decoded.items()} if decoded else {},
            )
        )
    return found


async def touches_in_range(
    session: AsyncSession, funnel_id: str, start_us: int, end_us: int
) -> dict[str, list[Touch]]:
    t = funnel_touches.c
    stmt = select(t.person_id, t.ts_us, t.seq, _as_text(t["values"])).where(
        t.funnel_id == funnel_id, t.ts_us >= start_us, t.ts_us < end_us
    )
    found: dict[str, list[Touch]] = defaultdict(list)
    result = await session.execute(stmt)
    for person, ts, seq, values in result:
        found[person].append(Touch(ts, seq, orjson.loads(values)))
    return found


async def change_stamp(session: AsyncSession, funnel_id: str) -> tuple[int, int]:
    """Moves whenever an aggregator commits a change to this funnel's stored progress (its
    change counters are written in the same transaction as the progress)."""
    c = funnel_changes.c
    row = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(c.changes), 0)).where(
                c.funnel_id == funnel_id
            )
        )
    ).one()
    return int(row[0]), int(row[1])


async def first_entry_from(
    session: AsyncSession, funnel_id: str, from_us: int, before_us: int | None = None
) -> int | None:
    """The earliest entry start at or after ``from_us`` (and before ``before_us``)."""
    e = funnel_entries.c
    stmt = select(func.min(e.t0_us)).where(e.funnel_id == funnel_id, e.t0_us >= from_us)
    if before_us is not None:
        stmt = stmt.where(e.t0_us < before_us)
    found = await session.scalar(stmt)
    return None if found is None else int(found)
