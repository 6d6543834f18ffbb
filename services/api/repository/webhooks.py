"""Webhook endpoints as the API manages them, and their deliveries' log (the outbox itself is
written and drained by the aggregator)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.tables import webhook_attempts, webhook_deliveries, webhook_endpoints


@dataclass(frozen=True, slots=True)
class EndpointRow:
    id: str
    project_id: str
    url: str
    event_types: list[str]
    funnel_id: str | None
    secret: str
    previous_secret: str | None
    previous_secret_until_us: int | None
    disabled_at_us: int | None
    disabled_reason: str | None
    created_at_us: int
    updated_at_us: int


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: str
    message_id: str
    status: str
    attempts: int
    next_attempt_us: int
    created_at_us: int


@dataclass(frozen=True, slots=True)
class AttemptRow:
    attempted_at_us: int
    status_code: int | None
    latency_ms: int
    response: str | None
    error: str | None


async def get_endpoint(
    session: AsyncSession, project_id: str, webhook_id: str
) -> EndpointRow | None:
    w = webhook_endpoints.c
    stmt = select(webhook_endpoints).where(w.id == webhook_id, w.project_id == project_id)
    row = (await session.execute(stmt)).first()
    return EndpointRow(**row._mapping) if row else None


async def list_endpoints(session: AsyncSession, project_id: str) -> list[EndpointRow]:
    w = webhook_endpoints.c
    stmt = select(webhook_endpoints).where(w.project_id == project_id).order_by(w.created_at_us)
    return [EndpointRow(**r._mapping) for r in await session.execute(stmt)]


async def create_endpoint(
    session: AsyncSession,
    project_id: str,
    endpoint: Mapping[str, Any],
    *,
    now_us: int,
) -> None:
    """Store an endpoint: ``endpoint`` holds its id, url, event types, funnel and secret."""
    await session.execute(
        webhook_endpoints.insert().values(
            project_id=project_id, created_at_us=now_us, updated_at_us=now_us, **endpoint
        )
    )


async def change_endpoint(
    session: AsyncSession, webhook_id: str, change: Mapping[str, Any], *, now_us: int
) -> None:
    """Set the columns named in ``change``."""
    await session.execute(
        update(webhook_endpoints)
        .where(webhook_endpoints.c.id == webhook_id)
        .values(updated_at_us=now_us, **change)
    )


async def delete_endpoint(session: AsyncSession, webhook_id: str) -> None:
    await session.execute(webhook_endpoints.delete().where(webhook_endpoints.c.id == webhook_id))


async def list_deliveries(
    session: AsyncSession, webhook_id: str, status: str | None, limit: int
) -> list[DeliveryRow]:
    """The endpoint's deliveries, newest first."""
    d = webhook_deliveries.c
    stmt = select(
        d.id, d.message_id, d.status, d.attempts, d.next_attempt_us, d.created_at_us
    ).where(d.endpoint_id == webhook_id)
    if status is not None:
        stmt = stmt.where(d.status == status)
    stmt = stmt.order_by(d.created_at_us.desc()).limit(limit)
    return [DeliveryRow(*r) for r in await session.execute(stmt)]


async def attempts_of(
    session: AsyncSession, delivery_ids: Sequence[str]
) -> dict[str, list[AttemptRow]]:
    """Each delivery's attempts, in the order they were made."""
    a = webhook_attempts.c
    stmt = (
        select(a.delivery_id, a.attempted_at_us, a.status_code, a.latency_ms, a.response, a.error)
        .where(a.delivery_id.in_(delivery_ids))
        .order_by(a.attempted_at_us)
    )
    found: dict[str, list[AttemptRow]] = {}
    for delivery_id, *attempt in await session.execute(stmt):
        found.setdefault(delivery_id, []).append(AttemptRow(*attempt))
    return found


async def replay_delivery(
    session: AsyncSession, webhook_id: str, delivery_id: str, *, now_us: int
) -> int:
    """Make one delivery of the endpoint pending, due now; how many were (0 or 1)."""
    d = webhook_deliveries.c
    return await _replay(session, (d.id == delivery_id, d.endpoint_id == webhook_id), now_us)


async def replay_failed(
    session: AsyncSession, webhook_id: str, since_us: int, *, now_us: int
) -> int:
    """Make the endpoint's failed deliveries created since ``since_us`` pending, due now."""
    d = webhook_deliveries.c
    where = (d.endpoint_id == webhook_id, d.status == "failed", d.created_at_us >= since_us)
    return await _replay(session, where, now_us)


async def _replay(session: AsyncSession, where: tuple[Any, ...], now_us: int) -> int:
    result: Any = await session.execute(
        update(webhook_deliveries)
        .where(*where)
        .values(status="pending", next_attempt_us=now_us, updated_at_us=now_us)
    )
    return int(result.rowcount or 0)
