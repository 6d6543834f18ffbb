"""Rows of ``aggregator_progress``: what the aggregator has applied per partition, for the
API's freshness figures (see services/aggregator/freshness.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, delete, update

from services.aggregator.model import Partition
from services.aggregator.repository import Session
from shared.db import insert_ignoring
from shared.tables import aggregator_progress


@dataclass(frozen=True, slots=True)
class Observed:
    partition: Partition
    end_offset: int
    observed_at_us: int
    owned: bool  # by this process: the other fields are its to write
    complete_to_us: int | None  # None: nothing known (not owned, or nothing applied yet)


async def store(session: Session, group_id: str, rows: Sequence[Observed], now: int) -> None:
    """Write ``rows`` (all partitions of their topics); drop rows of vanished partitions."""
    p = aggregator_progress.c
    await session.execute(
        insert_ignoring(session, aggregator_progress).on_conflict_do_nothing(),
        [_key(group_id, r.partition) | {"updated_at_us": now} for r in rows],
    )
    for r in rows:
        if not r.owned:
            continue
        values: dict[str, Any] = {
            "end_offset": r.end_offset,
            "observed_at_us": r.observed_at_us,
            "updated_at_us": now,
        }
        if r.complete_to_us is not None:
            later = and_(p.complete_to_us.is_not(None), p.complete_to_us > r.complete_to_us)
            values["complete_to_us"] = case((later, p.complete_to_us), else_=r.complete_to_us)
        where = [p.group_id == group_id, p.topic == r.partition[0], p.partition == r.partition[1]]
        await session.execute(update(aggregator_progress).where(*where).values(values))
    for topic in {r.partition[0] for r in rows}:
        kept = [r.partition[1] for r in rows if r.partition[0] == topic]
        await session.execute(
            delete(aggregator_progress).where(
                p.group_id == group_id, p.topic == topic, p.partition.not_in(kept)
            )
        )


def _key(group_id: str, partition: Partition) -> dict[str, Any]:
    return {"group_id": group_id, "topic": partition[0], "partition": partition[1]}
