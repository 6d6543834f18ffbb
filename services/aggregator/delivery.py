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

import orjson
from standardwebhooks.webhooks import Webhook

from services.aggregator import metrics
from services.aggregator.model import Claimed
from services.aggregator.repository import Session, Sessions, deliveries
from services.aggregator.sender import Answer, Sender
from shared.clock import US, Clock

log = logging.getLogger(__name__)

# Seconds to wait before attempt n+1 after attempt n failed: about a day in all.
SCHEDULE_S = (5, 300, 1800, 7200, 18_000, 36_000, 36_000)
LEASE_US = 60 * US
GONE = "receiver answered 410 Gone"


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
    occurred = datetime.fromtimestamp(claimed.created_at_us / US, UTC)
    return orjson.dumps(
        {"type": claimed.type, "timestamp": occurred.isoformat(), "data": claimed.payload}
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an attempt's answer makes of its delivery."""

    outcome: str  # delivered, retry, failed, disabled, refused (the metric's label)
    status: str | None  # the delivery's new status; None: it stays pending
    next_attempt_us: int | None  # for a retry
    disable: bool = False  # 410 Gone: the endpoint is disabled


def judge(answer: Answer, attempts: int, now_us: int, jitter: float) -> Verdict:
    """The verdict on attempt number ``attempts`` (from 1) answered ``answer`` at ``now_us``."""
    gone = answer.status == 410
    if answer.status is not None and 200 <= answer.status < 300:
        return Verdict("delivered", "delivered", None)
    if gone or answer.refused:
        return Verdict("disabled" if gone else "refused", "failed", None, disable=gone)
    if attempts > len(SCHEDULE_S):
        return Verdict("failed", "failed", None)
    spread = random.uniform(-jitter, jitter)  # noqa: S311 - not security
    wait = max(SCHEDULE_S[attempts - 1] * (1 + spread), answer.retry_after_s or 0.0)
    return Verdict("retry", None, now_us + int(wait * US))


class DeliveryWorker:
    def __init__(
        self,
        sessions: Sessions,
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
        async with self._sessions.begin() as session:
            claimed = await deliveries.claim_deliveries(session, now, self._batch, LEASE_US)
            pending = await deliveries.pending_deliveries(session)
        metrics.WEBHOOK_PENDING.set(pending)
        return claimed

    async def _send(self, claimed: Claimed) -> Answer:
        """One attempt; the sender resolves, checks and pins the address for it."""
        body = envelope(claimed)
        # The signature carries the real sending time (receivers reject stale timestamps),
        # whatever clock schedules the attempts.
        answer = await self._sender.post(claimed.url, sign(claimed, body, datetime.now(UTC)), body)
        if not answer.refused:
            metrics.WEBHOOK_SECONDS.observe(answer.seconds)
        return answer

    async def _record(self, session: Session, claimed: Claimed, answer: Answer) -> None:
        now = self._clock.now_us()
        attempts = claimed.attempts + 1
        verdict = judge(answer, attempts, now, self._jitter)
        await deliveries.record_attempt(
            session,
            claimed.id,
            now,
            attempts=attempts,
            status_code=answer.status,
            latency_ms=int(answer.seconds * 1000),
            response=answer.body,
            error=answer.error,
            status=verdict.status,
            next_attempt_us=verdict.next_attempt_us,
        )
        if verdict.disable:
            await deliveries.disable_endpoint(session, claimed.endpoint_id, GONE, now)
            log.warning("webhook endpoint %s disabled (410 Gone)", claimed.endpoint_id)
        metrics.WEBHOOK_DELIVERIES.labels(verdict.outcome).inc()
