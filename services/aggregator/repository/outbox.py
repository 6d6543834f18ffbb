"""The webhook outbox: messages and their deliveries, written in the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator.messages import Message
from shared.db import insert_ignoring
from shared.tables import webhook_deliveries, webhook_endpoints, webhook_messages


async def enqueue(session: AsyncSession, message: Message, now_us: int) -> int:
    """Store the message once and a pending delivery per subscribed endpoint; return how many."""
    await session.execute(
        insert_ignoring(session, webhook_messages)
        .values(
            id=message.id,
            project_id=message.project_id,
            type=message.type,
            funnel_id=message.funnel_id,
            payload=message.payload,
            created_at_us=now_us,
        )
        .on_conflict_do_nothing()
    )
    e = webhook_endpoints.c
    endpoints = await session.execute(
        select(e.id, e.event_types).where(
            e.project_id == message.project_id,
            e.disabled_at_us.is_(None),
            or_(e.funnel_id.is_(None), e.funnel_id == message.funnel_id),
        )
    )
    rows = [_delivery(message.id, id_, now_us) for id_, types in endpoints if message.type in types]
    if rows:
        await session.execute(
            insert_ignoring(session, webhook_deliveries).on_conflict_do_nothing(
                index_elements=["message_id", "endpoint_id"]
            ),
            rows,
        )
    return len(rows)


def _delivery(message_id: str, endpoint_id: str, now_us: int) -> dict[str, object]:
    """A pending delivery of the message to the endpoint, due at once."""
    return {
        "id": str(uuid.uuid4()),
        "message_id": message_id,
        "endpoint_id": endpoint_id,
        "status": "pending",
        "attempts": 0,
        "next_attempt_us": now_us,
        "created_at_us": now_us,
        "updated_at_us": now_us,
    }


async def subscribed_types(session: AsyncSession, project_id: str) -> set[str]:
    """Event types some enabled endpoint of the project listens to."""
    e = webhook_endpoints.c
    rows = await session.execute(
        select(e.event_types).where(e.project_id == project_id, e.disabled_at_us.is_(None))
    )
    return {t for (types,) in rows for t in types}


async def existing(session: AsyncSession, ids: Sequence[str]) -> set[str]:
    """Which of these message ids are stored."""
    if not ids:
        return set()
    m = webhook_messages.c
    return set((await session.scalars(select(m.id).where(m.id.in_(sorted(set(ids)))))).all())
