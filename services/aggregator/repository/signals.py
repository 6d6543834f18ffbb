"""Signals between partitions' owners: inserted by anyone, taken (deleted) by the owner."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator.model import Signal
from shared.tables import person_signals

_COLUMNS = ("topic", "partition", "project_id", "person_id", "reason", "since_us")


async def send(session: AsyncSession, signals: Iterable[Signal]) -> None:
    rows = [{c: getattr(s, c) for c in _COLUMNS} for s in sorted(set(signals), key=_order)]
    if rows:
        await session.execute(person_signals.insert(), rows)


def _order(s: Signal) -> tuple[str, int, str, str, str, int]:
    return (s.topic, s.partition, s.project_id, s.person_id, s.reason, s.since_us)


async def take(session: AsyncSession, topic: str, partitions: Sequence[int]) -> list[Signal]:
    """Delete and return the signals of these partitions (the caller owns them: its
    transaction holds their offsets)."""
    if not partitions:
        return []
    c = person_signals.c
    where = (c.topic == topic, c.partition.in_(sorted(partitions)))
    ids = list((await session.scalars(select(c.id).where(*where).limit(5000))).all())
    if not ids:
        return []
    rows = await session.execute(
        delete(person_signals).where(c.id.in_(ids)).returning(*(c[name] for name in _COLUMNS))
    )
    return [Signal(*r) for r in rows]
