"""The webhook outbox: messages and their deliveries, written in the caller's transaction."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import insert_ignoring
from shared.tables import webhook_deliveries, webhook_endpoints, webhook_messages


def message_id(*parts: object) -> str:
    """A stable webhook id from what makes the message unique (the receiver's idempotency key)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return f"msg_{digest[:32]}"


async def enqueue(
    session: AsyncSession,
    *,
    project_id: str,
    type_: str,
    msg_id: str,
    payload: dict[str, Any],
    funnel_id: str | None,
    now_us: int,
) -> int:
    """Store the message once and a pending delivery per subscribed endpoint; return how many."""
    await session.execute(
        insert_ignoring(session, webhook_messages)
        .values(
            id=msg_id,
            project_id=project_id,
            type=type_,
            funnel_id=funnel_id,
            payload=payload,
            created_at_us=now_us,
        )
        .on_conflict_do_nothing()
    )
    endpoints = await session.execute(
        select(webhook_endpoints.c.id, webhook_endpoints.c.event_types).where(
            webhook_endpoints.c.project_id == project_id,
            webhook_endpoints.c.disabled_at_us.is_(None),
            or_(
                webhook_endpoints.c.funnel_id.is_(None), webhook_endpoints.c.funnel_id == funnel_id
            ),
        )
    )
    rows = [
        {
            "id": str(uuid.uuid4()),
            "message_id": msg_id,
            "endpoint_id": endpoint_id,
            "status": "pending",
            "attempts": 0,
            "next_attempt_us": now_us,
            "created_at_us": now_us,
            "updated_at_us": now_us,
        }
        for endpoint_id, types in endpoints
        if type_ in types
    ]
    if rows:
        await session.execute(
            insert_ignoring(session, webhook_deliveries).on_conflict_do_nothing(
                index_elements=["message_id", "endpoint_id"]
            ),
            rows,
        )
    return len(rows)


async def subscribed_types(session: AsyncSession, project_id: str) -> set[str]:
    """Event types some enabled endpoint of the project listens to."""
    rows = await session.execute(
        select(webhook_endpoints.c.event_types).where(
            webhook_endpoints.c.project_id == project_id,
            webhook_endpoints.c.disabled_at_us.is_(None),
        )
    )
    return {t for (types,) in rows for t in types}
