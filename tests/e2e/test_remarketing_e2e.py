"""Re-marketing with real processes and the real clock: a rule of seconds, a real receiver."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from tests.receiver import Receiver
from tests.stack import eventually

RULE = {"name": "nudge", "after_seconds": 2, "grace_seconds": 0}


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def setup(stack, receiver: Receiver, name: str) -> tuple[str, str]:
    with stack.api() as api:
        funnel = {
            "name": name,
            "steps": [{"event": f"{name}-visit"}, {"event": f"{name}-buy"}],
            "remarketing": [RULE],
        }
        funnel_id = api.post("/v1/funnels", json=funnel).json()["id"]
        hook = api.post(
            "/v1/webhooks",
            json={"url": receiver.url, "event_types": ["remarketing.due"], "funnel_id": funnel_id},
        ).json()
        receiver.secret = hook["secret"]
        eventually(
            lambda: api.get(f"/v1/funnels/{funnel_id}").json()["backfill"]["done"],
            bool,
            timeout_s=30,
            what="funnel backfilled",
        )
        return funnel_id, hook["id"]


def test_a_rule_of_seconds_fires_with_the_real_clock(stack):
    receiver = Receiver().start()
    try:
        setup(stack, receiver, "fast")
        with stack.ingest() as ingest:
            events = [
                {"user_id": "stays", "event": "fast-visit", "timestamp": now_iso()},
                {"user_id": "buys", "event": "fast-visit", "timestamp": now_iso()},
                {"user_id": "buys", "event": "fast-buy", "timestamp": now_iso()},
            ]
            assert ingest.post("/v1/events", json={"batch": events}).status_code == 202
        got = eventually(lambda: receiver.unique(), lambda u: len(u) >= 1, 30, "the webhook")
        time.sleep(3)  # nothing more may come
        assert [m["data"]["person_id"] for m in receiver.unique().values()] == ["stays"]
        assert len(got) == 1
        assert receiver.bad_signatures == 0
    finally:
        receiver.stop()


def test_a_killed_aggregator_still_delivers_the_trigger_with_the_same_id(stack):
    receiver = Receiver().start()
    port = receiver.port
    try:
        _, hook_id = setup(stack, receiver, "crash")
        receiver.stop()  # down: the first attempt fails, the trigger waits in the outbox
        with stack.ingest() as ingest:
            event = {"user_id": "p", "event": "crash-visit", "timestamp": now_iso()}
            assert ingest.post("/v1/events", json=event).status_code == 202
        with stack.api() as api:
            [delivery] = eventually(
                lambda: api.get(f"/v1/webhooks/{hook_id}/deliveries").json()["deliveries"],
                lambda d: len(d) == 1 and d[0]["attempts"] >= 1,
                timeout_s=30,
                what="a failed first attempt",
            )
        for process in list(stack.aggregators):
            process.kill()
            process.wait()
        receiver.port = port
        receiver.start()
        stack.start_aggregator()
        eventually(lambda: receiver.unique(), lambda u: len(u) == 1, 60, "delivery after restart")
        assert list(receiver.unique()) == [delivery["webhook_id"]]
    finally:
        receiver.stop()
