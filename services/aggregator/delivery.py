"""Webhook delivery from the outbox: at least once, signed (Standard Webhooks), with retries.

A delivery is claimed by pushing its next attempt a lease ahead and committing, then sent
outside any transaction, then its outcome is recorded. A worker that dies mid-send leaves
the lease to expire and the delivery is sent again with the same webhook id, which is the
receiver's idempotency key.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook

from services.aggregator import metrics
from services.aggregator.remarketing import Clock
from services.aggregator.sender import Answer, Sender
from shared.db import is_postgres
from shared.tables import webhook_attempts, webhook_deliveries, webhook_endpoints, webhook_messages

# Seconds to wait before attempt n+1 after attempt n failed: about a day in all.
SCHEDULE_S = (5, 300, 1800, 7200, 18_000, 36_000, 36_000)
LEASE_US = 60 * 1_000_000


@dataclass(frozen=True, slots=True)
class Claimed:
    id: str
    endpoint_id: str
    url: str
    secrets: tuple[str, ...]
    message_id: str
    type: str
    payload: dict[str, Any]
    created_at_us: int
    attempts: int


def sign(claimed: Claimed, body: bytes, at: datetime) -> dict[str, str]:
    """Standard Webhooks headers; during a secret rotation both secrets sign."""
    signatures = " ".join(
        Webhook(secret).sign(claimed.message_id, at, body.decode()) for secret in claimed.secrets
    )
    return {
        "content-type": "application/json",
        "webhook-id": claimed.message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
    }


def envelope(claimed: Claimed) -> bytes:
    occurred = datetime.fromtimestamp(claimed.created_at_us / 1e6, UTC)
    return orjson.dumps(
        {"type": claimed.type, "timestamp": occurred.isoformat(), "data": claimed.payload}
    )


class DeliveryWorker:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        sender: Sender,
        clock: Clock,
        *,
        batch: int = 50,
        jitter: float = 0.1,
    ) -> None:
        self._sessions = sessions
        self._sender = sender
        self._clock = clock
        self._batch = batch
        self._jitter = jitter

    async def run_once(self) -> int:
        """Claim, send and record one batch of due deliveries; return how many."""
        claimed = await self._claim()
        if not claimed:
            return 0
        answers = await asyncio.gather(*(self._send(c) for c in claimed))
        async with self._sessions.begin() as session:
            for c, answer in zip(claimed, answers, strict=True):
                await self._record(session, c, answer)
        return len(claimed)

    async def _claim(self) -> list[Claimed]:
        now = self._clock.now_us()
        d, e, m = webhook_deliveries.c, webhook_endpoints.c, webhook_messages.c
        async with self._sessions.begin() as session:
            stmt = (
                select(
                    d.id,
                    d.endpoint_id,
                    d.attempts,
                    e.url,
                    e.secret,
                    e.previous_secret,
                    e.previous_secret_until_us,
                    m.id.label("message_id"),
                    m.type,
                    m.payload,
                    m.created_at_us,
                )
                .join(webhook_endpoints, e.id == d.endpoint_id)
                .join(webhook_messages, m.id == d.message_id)
                .where(d.status == "pending", d.next_attempt_us <= now)
                .order_by(d.next_attempt_us)
                .limit(self._batch)
            )
            if is_postgres(session):
                stmt = stmt.with_for_update(of=webhook_deliveries, skip_locked=True)
            rows = (await session.execute(stmt)).all()
            if rows:
                await session.execute(
                    update(webhook_deliveries)
                    .where(d.id.in_([r.id for r in rows]))
                    .values(next_attempt_us=now + LEASE_US)
                )
            pending = await session.scalar(
                select(func.count()).select_from(webhook_deliveries).where(d.status == "pending")
            )
        metrics.WEBHOOK_PENDING.set(pending or 0)
        return [
            Claimed(
                r.id,
                r.endpoint_id,
                r.url,
                _signing_secrets(r, now),
                r.message_id,
                r.type,
                r.payload,
                r.created_at_us,
                r.attempts,
            )
            for r in rows
        ]

    async def _send(self, claimed: Claimed) -> Answer:
        """One attempt; the sender resolves, checks and pins the address for it."""
        body = envelope(claimed)
        # The signature carries the real sending time (receivers reject stale timestamps),
        # whatever clock schedules the attempts.
        answer = await self._sender.post(claimed.url, sign(claimed, body, datetime.now(UTC)), body)
        if not answer.refused:
            metrics.WEBHOOK_SECONDS.observe(answer.seconds)
        return answer

    async def _record(self, session: AsyncSession, claimed: Claimed, answer: Answer) -> None:
        now = self._clock.now_us()
        attempts = claimed.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "last_status_code": answer.status}
        gone = answer.status == 410
        if answer.status is not None and 200 <= answer.status < 300:
            outcome = values["status"] = "delivered"
        elif gone or answer.refused:
            outcome, values["status"] = ("disabled" if gone else "refused"), "failed"
        elif attempts > len(SCHEDULE_S):
            outcome = values["status"] = "failed"
        else:
            outcome = "retry"
            jitter = random.uniform(-self._jitter, self._jitter)  # noqa: S311 - not security
            wait = max(SCHEDULE_S[attempts - 1] * (1 + jitter), answer.retry_after_s or 0.0)
            values["next_attempt_us"] = now + int(wait * 1_000_000)
        await session.execute(
            webhook_attempts.insert().values(
                delivery_id=claimed.id,
                attempted_at_us=now,
                status_code=answer.status,
                latency_ms=int(answer.seconds * 1000),
                response=answer.body,
                error=answer.error,
            )
        )
        await session.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.id == claimed.id)
            .values(updated_at_us=now, **values)
        )
        if gone:
            await _disable(session, claimed.endpoint_id, now)
        metrics.WEBHOOK_DELIVERIES.labels(outcome).inc()


def _signing_secrets(row: Any, now_us: int) -> tuple[str, ...]:
    """The current secret, plus the previous one while its rotation overlap lasts."""
    if row.previous_secret and (row.previous_secret_until_us or 0) > now_us:
        return (row.secret, row.previous_secret)
    return (row.secret,)


async def _disable(session: AsyncSession, endpoint_id: str, now: int) -> None:
    """410 Gone: the endpoint is disabled and its waiting deliveries with it."""
    await session.execute(
        update(webhook_endpoints)
        .where(webhook_endpoints.c.id == endpoint_id)
        .values(disabled_at_us=now, disabled_reason="receiver answered 410 Gone", updated_at_us=now)
    )
    await session.execute(
        update(webhook_deliveries)
        .where(
            webhook_deliveries.c.endpoint_id == endpoint_id,
            webhook_deliveries.c.status == "pending",
        )
        .values(status="disabled", updated_at_us=now)
    )
    logging.getLogger(__name__).warning("webhook endpoint %s disabled (410 Gone)", endpoint_id)
