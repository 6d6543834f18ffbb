"""Webhook deliveries: claimed under a lease, their attempts logged, endpoints disabled."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator.model import Claimed, signing_secrets
from shared.db import is_postgres
from shared.tables import webhook_attempts, webhook_deliveries, webhook_endpoints, webhook_messages


async def claim_deliveries(
    session: AsyncSession, now_us: int, limit: int, lease_us: int
) -> list[Claimed]:
    """Pending deliveries due by now, earliest first, their next attempt pushed a lease
    ahead (on PostgreSQL locked, skipping those another worker holds)."""
    d, e, m = webhook_deliveries.c, webhook_endpoints.c, webhook_messages.c
    stmt = (
        select(
            d.id,
            d.endpoint_id,
            e.url,
            e.secret,
            e.previous_secret,
            e.previous_secret_until_us,
            m.id.label("message_id"),
            m.type,
            m.payload,
            m.created_at_us,
            d.attempts,
        )
        .join(webhook_endpoints, e.id == d.endpoint_id)
        .join(webhook_messages, m.id == d.message_id)
        .where(d.status == "pending", d.next_attempt_us <= now_us)
        .order_by(d.next_attempt_us)
        .limit(limit)
    )
    if is_postgres(session):
        stmt = stmt.with_for_update(of=webhook_deliveries, skip_locked=True)
    rows = (await session.execute(stmt)).all()
    if rows:
        await session.execute(
            update(webhook_deliveries)
            .where(d.id.in_([r.id for r in rows]))
            .values(next_attempt_us=now_us + lease_us)
        )
    return [_claimed(r, now_us) for r in rows]


def _claimed(r: Any, now_us: int) -> Claimed:
    secrets = signing_secrets(r.secret, r.previous_secret, r.previous_secret_until_us, now_us)
    return Claimed(
        r.id,
        r.endpoint_id,
        r.url,
        secrets,
        r.message_id,
        r.type,
        r.payload,
        r.created_at_us,
        r.attempts,
    )


async def pending_deliveries(session: AsyncSession) -> int:
    d = webhook_deliveries.c
    found = await session.scalar(
        select(func.count()).select_from(webhook_deliveries).where(d.status == "pending")
    )
    return int(found or 0)


async def record_attempt(
    session: AsyncSession,
    delivery_id: str,
    now_us: int,
    *,
    attempts: int,
    status_code: int | None,
    latency_ms: int,
    response: str,
    error: str | None,
    status: str | None,
    next_attempt_us: int | None,
) -> None:
    """Log one attempt and update its delivery: ``status`` None leaves it pending, and
    ``next_attempt_us`` None leaves its next attempt where the claim's lease put it."""
    await session.execute(
        webhook_attempts.insert().values(
            delivery_id=delivery_id,
            attempted_at_us=now_us,
            status_code=status_code,
            latency_ms=latency_ms,
            response=response,
            error=error,
        )
    )
    values: dict[str, Any] = {"attempts": attempts, "last_status_code": status_code}
    if status is not None:
        values["status"] = status
    if next_attempt_us is not None:
        values["next_attempt_us"] = next_attempt_us
    await session.execute(
        update(webhook_deliveries)
        .where(webhook_deliveries.c.id == delivery_id)
        .values(updated_at_us=now_us, **values)
    )


async def disable_endpoint(
    session: AsyncSession, endpoint_id: str, reason: str, now_us: int
) -> None:
    """The endpoint is disabled and its waiting deliveries with it."""
    await session.execute(
        update(webhook_endpoints)
        .where(webhook_endpoints.c.id == endpoint_id)
        .values(disabled_at_us=now_us, disabled_reason=reason, updated_at_us=now_us)
    )
    await session.execute(
        update(webhook_deliveries)
        .where(
            webhook_deliveries.c.endpoint_id == endpoint_id,
            webhook_deliveries.c.status == "pending",
        )
        .values(status="disabled", updated_at_us=now_us)
    )
