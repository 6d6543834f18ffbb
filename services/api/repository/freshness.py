"""What the aggregators stored about their progress: per partition, its end offset, when it
was asked for, the instant applied up to, and the next offset committed with the state."""

from __future__ import annotations

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.freshness import PartitionState
from shared.tables import aggregator_progress, consumer_offsets


async def partition_states(session: AsyncSession, group_id: str) -> list[PartitionState]:
    """The consumer group's partitions, by topic and partition."""
    p, o = aggregator_progress.c, consumer_offsets.c
    joined = aggregator_progress.outerjoin(
        consumer_offsets,
        and_(o.group_id == p.group_id, o.topic == p.topic, o.partition == p.partition),
    )
    stmt = (
        select(
            p.topic, p.partition, p.end_offset, p.observed_at_us, p.complete_to_us, o.next_offset
        )
        .select_from(joined)
        .where(p.group_id == group_id)
        .order_by(p.topic, p.partition)
    )
    return [PartitionState(*row) for row in await session.execute(stmt)]
