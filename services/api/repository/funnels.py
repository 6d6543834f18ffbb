"""Funnels as stored: definitions, versions and backfill progress; changing or deleting one
deletes its stored progress in the same transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.tables import funnel_entries, funnel_touches, funnels, remarketing_timers


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


async def create_funnel(
    session: AsyncSession, project_id: str, definition: dict[str, Any], *, now_us: int
) -> str:
    funnel_id = str(uuid.uuid4())
    await session.execute(
        funnels.insert().values(
            id=funnel_id,
            project_id=project_id,
            name=definition["name"],
            definition=definition,
            version=1,
            created_at_us=now_us,
            updated_at_us=now_us,
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


async def has_funnel(session: AsyncSession, project_id: str, funnel_id: str) -> bool:
    found = await session.scalar(
        select(funnels.c.id).where(funnels.c.id == funnel_id, funnels.c.project_id == project_id)
    )
    return found is not None


async def list_funnels(session: AsyncSession, project_id: str) -> list[FunnelRow]:
    stmt = select(*_COLUMNS).where(funnels.c.project_id == project_id).order_by(funnels.c.name)
    return [FunnelRow(*r) for r in await session.execute(stmt)]


async def all_funnels(session: AsyncSession) -> list[FunnelRow]:
    stmt = select(*_COLUMNS).order_by(funnels.c.project_id, funnels.c.name)
    return [FunnelRow(*r) for r in await session.execute(stmt)]


async def redefine_funnel(
    session: AsyncSession, funnel_id: str, definition: dict[str, Any], *, now_us: int
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
            updated_at_us=now_us,
            backfill_cursor=None,
            backfill_done=False,
            backfill_persons=0,
        )
    )


async def rename_funnel(
    session: AsyncSession, funnel_id: str, definition: dict[str, Any], *, now_us: int
) -> None:
    """A change that does not affect counting (name, default count mode): no recompute."""
    await session.execute(
        update(funnels)
        .where(funnels.c.id == funnel_id)
        .values(name=definition["name"], definition=definition, updated_at_us=now_us)
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
