"""The real delivery worker on SQLite and PostgreSQL: checked addresses only, answers stored."""

from __future__ import annotations

import base64
import uuid

from sqlalchemy import select

from services.aggregator.delivery import DeliveryWorker
from services.aggregator.sender import BODY_BYTES, HttpSender
from shared.clock import now_us
from shared.netguard import parse_networks
from shared.tables import webhook_attempts, webhook_deliveries, webhook_endpoints, webhook_messages
from tests.helpers import create_key
from tests.receiver import Receiver, ScriptedResolver

SECRET = "whsec_" + base64.b64encode(b"delivery-address-test-0123").decode()


class Clock:
    def __init__(self) -> None:
        self.us = now_us()

    def now_us(self) -> int:
        return self.us


async def seed(sessions, url: str, n: int) -> None:
    """One endpoint at ``url`` and ``n`` due deliveries to it, as the outbox holds them."""
    stamp = now_us()
    async with sessions.begin() as session:
        await create_key(session, "proj", "admin")
        await session.execute(
            webhook_endpoints.insert().values(
                id="ep",
                project_id="proj",
                url=url,
                event_types=["remarketing.due"],
                secret=SECRET,
                created_at_us=stamp,
                updated_at_us=stamp,
            )
        )
        for i in range(n):
            await session.execute(
                webhook_messages.insert().values(
                    id=f"msg_{i}",
                    project_id="proj",
                    type="remarketing.due",
                    payload={"person_id": f"p{i}"},
                    created_at_us=stamp,
                )
            )
            await session.execute(
                webhook_deliveries.insert().values(
                    id=str(uuid.uuid4()),
                    message_id=f"msg_{i}",
                    endpoint_id="ep",
                    status="pending",
                    attempts=0,
                    next_attempt_us=stamp,
                    created_at_us=stamp,
                    updated_at_us=stamp,
                )
            )


async def outcomes(sessions) -> list[tuple[str, int | None, str | None, str | None]]:
    """(status, status code, response, error) of every attempt, by message."""
    d, a = webhook_deliveries.c, webhook_attempts.c
    async with sessions.begin() as session:
        rows = await session.execute(
            select(d.status, a.status_code, a.response, a.error)
            .join(webhook_attempts, a.delivery_id == d.id)
            .order_by(d.message_id, a.id)
        )
        return [tuple(r) for r in rows]


async def test_a_rebinding_name_is_never_delivered_to_the_address_it_rebinds_to(sessions):
    allowed = Receiver(SECRET).start()
    refused = Receiver(SECRET, host="127.0.0.2")
    refused.port = allowed.port
    refused.start()
    resolver = ScriptedResolver(["127.0.0.1"], ["127.0.0.2"])  # flips on every lookup
    sender = HttpSender(
        timeout_s=10, allowed_networks=parse_networks("127.0.0.1/32"), resolver=resolver
    )
    await seed(sessions, f"http://rebind.test:{allowed.port}/hook", 10)
    try:
        assert await DeliveryWorker(sessions, sender, Clock(), batch=50).run_once() == 10
    finally:
        await sender.close()
        allowed.stop()
        refused.stop()
    rows = await outcomes(sessions)
    assert refused.calls == 0
    assert len(resolver.asked) == 10  # one lookup per attempt
    assert sorted(r[0] for r in rows) == ["delivered"] * 5 + ["failed"] * 5
    assert len(allowed.unique()) == 5
    assert allowed.bad_signatures == 0
    for status, code, _, error in rows:
        if status == "failed":  # refused: not retried
            assert code is None
            assert "resolves to 127.0.0.2, a loopback (127.0.0.0/8) address" in (error or "")


async def test_delivery_by_name_to_an_allowed_local_receiver_works_end_to_end(sessions):
    receiver = Receiver(SECRET).start()
    # The system resolver; some systems also answer ::1 for localhost, allowed here too.
    sender = HttpSender(timeout_s=10, allowed_networks=parse_networks("127.0.0.0/8,::1/128"))
    await seed(sessions, f"http://localhost:{receiver.port}/hook", 3)
    try:
        assert await DeliveryWorker(sessions, sender, Clock()).run_once() == 3
    finally:
        await sender.close()
        receiver.stop()
    assert [r[:2] for r in await outcomes(sessions)] == [("delivered", 200)] * 3
    assert sorted(receiver.unique()) == ["msg_0", "msg_1", "msg_2"]
    assert receiver.host_headers == [f"localhost:{receiver.port}"] * 3


async def test_a_receiver_answering_nul_bytes_and_an_endless_retry_after_is_recorded(sessions):
    receiver = Receiver(SECRET).start()
    receiver.status = 503
    receiver.answer_body = b"busy\x00" * 1000
    receiver.answer_headers = {"Retry-After": "inf"}
    sender = HttpSender(timeout_s=10, allowed_networks=parse_networks("127.0.0.0/8"))
    await seed(sessions, receiver.url, 1)
    clock = Clock()
    try:
        assert await DeliveryWorker(sessions, sender, clock, jitter=0).run_once() == 1
    finally:
        await sender.close()
        receiver.stop()
    [(status, code, response, error)] = await outcomes(sessions)
    assert (status, code, error) == ("pending", 503, None)
    assert response == ("busy\N{REPLACEMENT CHARACTER}" * 1000)[:BODY_BYTES]
    async with sessions.begin() as session:
        due = await session.scalar(select(webhook_deliveries.c.next_attempt_us))
    assert due == clock.us + 5_000_000  # the schedule's first wait: "inf" is ignored
