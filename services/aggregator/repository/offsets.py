"""Consumer offsets: each partition's next offset, stored with the state it describes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator.model import Partition
from shared.db import insert_ignoring, is_postgres
from shared.tables import aggregator_progress, consumer_offsets


class StaleOffsets(Exception):
    """Another consumer moved a partition's stored offset: this batch must not commit."""


# The offset row of a partition held before anything of it was applied: it is there to be
# locked (``hold_offsets``). 0 is where its log starts; it is loaded as nothing stored.
UNAPPLIED = 0


async def load_offsets(
    session: AsyncSession, group_id: str, partitions: Iterable[Partition]
) -> dict[Partition, int]:
    """The stored next offsets of these partitions (none: nothing applied yet)."""
    wanted = set(partitions)
    c = consumer_offsets.c
    stmt = select(c.topic, c.partition, c.next_offset).where(c.group_id == group_id)
    return {
        (r.topic, r.partition): r.next_offset
        for r in await session.execute(stmt)
        if (r.topic, r.partition) in wanted and r.next_offset != UNAPPLIED
    }


async def hold_offsets(
    session: AsyncSession, group_id: str, expected: Mapping[Partition, int | None]
) -> None:
    """Lock the stored offsets of the partitions this consumer holds (PostgreSQL: until the
    transaction ends) and check that they are where it expects them (``StaleOffsets`` if
    not): a transaction that writes persons of these partitions holds them, so two
    consumers never write the persons of one partition at once. A partition with nothing
    applied yet (``None``) gets its row first, at ``UNAPPLIED``, so that it is held too:
    the signals to its ids are taken under the same lock as those of any other."""
    held = {p: UNAPPLIED if o is None else o for p, o in expected.items()}
    if not held:
        return
    c = consumer_offsets.c
    for topic, number in sorted(p for p, o in expected.items() if o is None):
        await session.execute(_unapplied(session, group_id, topic, number, now_us=0))
    stmt = (
        select(c.topic, c.partition, c.next_offset)
        .where(c.group_id == group_id, c.partition.in_(sorted({p for _, p in held})))
        .order_by(c.topic, c.partition)
    )
    if is_postgres(session):
        stmt = stmt.with_for_update()
    found = {(r.topic, r.partition): r.next_offset for r in await session.execute(stmt)}
    for partition, offset in sorted(held.items()):
        if found.get(partition) != offset:
            raise StaleOffsets(f"{partition[0]}[{partition[1]}] moved past {offset}")


async def advance_offsets(
    session: AsyncSession,
    group_id: str,
    moves: Mapping[Partition, tuple[int | None, int]],
    now_us: int,
) -> None:
    """Compare-and-set each partition's next offset from ``expected`` to ``new``.

    A consumer that lost its partitions (a zombie after a long pause) fails here instead of
    applying records that the partition's new owner applies too.
    """
    c = consumer_offsets.c
    for (topic, partition), (expected, new) in sorted(moves.items()):
        key = and_(c.group_id == group_id, c.topic == topic, c.partition == partition)
        if expected is None:  # nothing applied yet: no row, or the one held at UNAPPLIED
            await session.execute(_unapplied(session, group_id, topic, partition, now_us))
        stmt = (
            update(consumer_offsets)
            .where(key, c.next_offset == (UNAPPLIED if expected is None else expected))
            .values(next_offset=new, updated_at_us=now_us)
        )
        result: Any = await session.execute(stmt)
        if result.rowcount != 1:
            raise StaleOffsets(f"{topic}[{partition}] moved past {expected}")


def _unapplied(
    session: AsyncSession, group_id: str, topic: str, partition: int, now_us: int
) -> Any:
    """The partition's row at ``UNAPPLIED``, unless it has one."""
    return (
        insert_ignoring(session, consumer_offsets)
        .values(
            group_id=group_id,
            topic=topic,
            partition=partition,
            next_offset=UNAPPLIED,
            updated_at_us=now_us,
        )
        .on_conflict_do_nothing()
    )


async def forget_offsets(session: AsyncSession) -> None:
    """Every group's stored offsets, and what it saw of the old log (the next one starts
    empty): the next assignment reads partitions from the start."""
    await session.execute(consumer_offsets.delete())
    await session.execute(aggregator_progress.delete())
