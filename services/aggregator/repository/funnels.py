"""Funnels as the aggregator reads them, and the backfill's position in each."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator.model import ActiveFunnel, TimerFunnel
from shared.db import is_postgres
from shared.funnel import definition_from_doc
from shared.tables import funnels

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


async def timer_funnels(session: AsyncSession, ids: Iterable[str]) -> dict[str, TimerFunnel]:
    """These funnels as stored now, by id (a deleted one is missing)."""
    c = funnels.c
    result = await session.execute(
        select(c.id, c.project_id, c.name, c.definition).where(c.id.in_(sorted(set(ids))))
    )
    return {
        r.id: TimerFunnel(r.id, r.project_id, r.name, definition_from_doc(r.definition))
        for r in result
    }
