"""Re-marketing timers and signed webhooks, day-scale rules on a clock the tests move."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import datetime

import httpx
import pytest
from prometheus_client import REGISTRY

from services.aggregator.delivery import DeliveryWorker
from services.aggregator.processor import Processor
from services.aggregator.sender import HttpSender
from services.aggregator.timers import TimerFirer
from services.api.app import create_app
from services.api.settings import ApiSettings
from shared.netguard import parse_networks
from tests.helpers import canonical, create_key, records
from tests.receiver import Receiver

DAY = 86_400
US = 1_000_000
LOOPBACK = "127.0.0.0/8"
RULES = [
    {"name": "7-day", "after_seconds": 7 * DAY},
    {
        "name": "90-day",
        "after_seconds": 14 * DAY,
        "repeat_every_seconds": 14 * DAY,
        "until_seconds": 90 * DAY,
    },
]


class ManualClock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def now_us(self) -> int:
        return int(self.now_s * US)


class World:
    """Aggregator parts, the API and a receiver, all on one database and one manual clock."""

    def __init__(self, sessions, api, receiver, clock) -> None:
        self.sessions, self.api, self.receiver, self.clock = sessions, api, receiver, clock
        self.processor = Processor(sessions, "g", horizon_us=lambda: 0)
        self.firer = TimerFirer(sessions, clock)
        self.sender = HttpSender(timeout_s=5, allowed_networks=parse_networks(LOOPBACK))
        self.worker = DeliveryWorker(sessions, self.sender, clock)
        self.partition = 0

    async def feed(self, *events) -> None:
        self.partition += 1
        await self.processor.apply(records(list(events), partition=self.partition), {})
        while await self.processor.backfill_step(100):
            pass

    async def advance_to(self, t_s: float, step_s: float = 3600) -> None:
        while self.clock.now_s < t_s:
            self.clock.now_s = min(self.clock.now_s + step_s, t_s)
            await self.firer.fire_due()
            while await self.worker.run_once():
                pass

    async def funnel_and_hook(self, rules=RULES, **options) -> str:
        funnel = {
            "name": "buyers",
            "steps": [{"event": "visit"}, {"event": "signup"}, {"event": "buy"}],
            "window_seconds": 100 * DAY,
            "remarketing": rules,
            **options,
        }
        created = await self.api.post("/v1/funnels", json=funnel)
        assert created.status_code == 201, created.text
        hook = await self.api.post(
            "/v1/webhooks", json={"url": self.receiver.url, "event_types": ["remarketing.due"]}
        )
        assert hook.status_code == 201, hook.text
        self.receiver.secret = hook.json()["secret"]
        return hook.json()["id"]


@pytest.fixture
async def world(database_url, sessions):
    async with sessions.begin() as session:
        admin = await create_key(session, "proj", "admin")
    app = create_app(ApiSettings(database_url=database_url, webhook_allowed_networks=LOOPBACK))
    receiver = Receiver().start()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {admin}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers=headers
        ) as api:
            # Events happen after the rules exist, so that their timers are not "backfilled".
            w = World(sessions, api, receiver, ManualClock(time.time() + 3600))
            yield w
            await w.sender.close()
    receiver.stop()


def fired(receiver: Receiver) -> dict[str, list[tuple[str, int]]]:
    by_person = defaultdict(list)
    for message in receiver.unique().values():
        data = message["data"]
        by_person[data["person_id"]].append((data["rule"]["name"], data["rule"]["occurrence"]))
    return {p: sorted(v) for p, v in by_person.items()}


async def test_seven_and_ninety_day_rules_fire_on_schedule_and_stop_on_conversion(world):
    await world.funnel_and_hook()
    t0 = world.clock.now_s
    await world.feed(
        canonical("day6", "visit", t0, plan="pro"),
        canonical("never", "visit", t0),
        canonical("day30", "visit", t0),
    )
    await world.advance_to(t0 + 6 * DAY)
    await world.feed(canonical("day6", "buy", t0 + 6 * DAY))
    await world.advance_to(t0 + 30 * DAY)
    await world.feed(canonical("day30", "buy", t0 + 30 * DAY))
    await world.advance_to(t0 + 120 * DAY, step_s=6 * 3600)
    series = [("90-day", k) for k in range(6)]  # days 14, 28, 42, 56, 70, 84
    assert fired(world.receiver) == {
        "never": sorted([("7-day", 0), *series]),
        "day30": sorted([("7-day", 0), ("90-day", 0), ("90-day", 1)]),
    }
    assert world.receiver.bad_signatures == 0
    assert world.receiver.duplicates() == 0
    sample = next(m["data"] for m in world.receiver.received if m["data"]["person_id"] == "never")
    assert sample["funnel"]["name"] == "buyers"
    assert sample["current_step"] == {"step": 1, "name": "visit"}
    # The trigger counter names the funnel by id (two funnels may share a name).
    labels = {
        "funnel_id": sample["funnel"]["id"],
        "funnel_name": "buyers",
        "rule": "7-day",
        "outcome": "fired",
    }
    assert REGISTRY.get_sample_value("funnel_remarketing_triggers_total", labels) >= 2


async def test_an_any_order_journey_gets_one_remarketing_webhook(world):
    """Entries at 0, 8 and 15 days overlap one after another (10-day window): one journey.
    The event at day 50 re-evaluates from day 10 on, which must still see the entry at 8."""
    rule = {"name": "30-day", "after_seconds": 30 * DAY}
    await world.funnel_and_hook([rule], order="any", window_seconds=10 * DAY)
    t0 = world.clock.now_s
    await world.feed(
        canonical("p", "visit", t0),
        canonical("p", "signup", t0 + 8 * DAY),
        canonical("p", "visit", t0 + 15 * DAY),
        canonical("q", "visit", t0),
        canonical("q", "visit", t0 + 20 * DAY),
    )
    await world.advance_to(t0 + 50 * DAY, step_s=6 * 3600)
    await world.feed(canonical("p", "signup", t0 + 50 * DAY))
    await world.advance_to(t0 + 100 * DAY, step_s=6 * 3600)
    days: dict[str, list[int]] = defaultdict(list)
    for message in world.receiver.unique().values():
        data = message["data"]
        entered = datetime.fromisoformat(data["entry_time"]).timestamp()
        days[data["person_id"]].append(round((entered - t0) / DAY))
    assert {p: sorted(d) for p, d in days.items()} == {"p": [0, 50], "q": [0, 20]}
    assert world.receiver.duplicates() == 0


async def test_grace_lets_a_late_conversion_cancel_the_trigger(world):
    await world.funnel_and_hook()
    t0 = world.clock.now_s
    await world.feed(canonical("late", "visit", t0))
    await world.advance_to(t0 + 7 * DAY + 3600)  # due, but inside the 4 h grace
    await world.feed(canonical("late", "buy", t0 + 6 * DAY))  # arrives late, happened on day 6
    await world.advance_to(t0 + 100 * DAY, step_s=6 * 3600)
    assert fired(world.receiver) == {}


async def test_receiver_down_then_up_gets_each_webhook_once_by_id(world):
    await world.funnel_and_hook([RULES[0]])
    t0 = world.clock.now_s
    await world.feed(*(canonical(f"p{i}", "visit", t0) for i in range(5)))
    port = world.receiver.port
    world.receiver.stop()
    await world.advance_to(t0 + 7 * DAY + 5 * 3600, step_s=600)  # due and tried: refused
    world.receiver.status = 503
    world.receiver.port = port
    world.receiver.start()
    await world.advance_to(world.clock.now_s + 3 * 3600, step_s=600)  # answered 503, retried
    assert world.receiver.received == []
    world.receiver.status = 200
    await world.advance_to(world.clock.now_s + 11 * 3600, step_s=600)
    assert sorted(fired(world.receiver)) == [f"p{i}" for i in range(5)]
    assert len(world.receiver.unique()) == 5
    assert world.receiver.bad_signatures == 0


async def test_410_disables_the_endpoint_and_stops_attempts(world):
    hook_id = await world.funnel_and_hook([RULES[0]])
    t0 = world.clock.now_s
    await world.feed(canonical("a", "visit", t0), canonical("b", "visit", t0 + 3 * DAY))
    world.receiver.status = 410
    await world.advance_to(t0 + 8 * DAY)
    calls = world.receiver.calls
    assert calls == 1
    await world.advance_to(t0 + 30 * DAY)
    assert world.receiver.calls == calls
    hook = (await world.api.get(f"/v1/webhooks/{hook_id}")).json()
    assert (hook["enabled"], hook["disabled_reason"]) == (False, "receiver answered 410 Gone")
    log = (await world.api.get(f"/v1/webhooks/{hook_id}/deliveries")).json()["deliveries"]
    assert [d["attempt_log"][0]["status_code"] for d in log if d["attempt_log"]] == [410]


async def test_a_worker_dying_after_claiming_leaves_the_webhook_to_be_sent_with_the_same_id(world):
    await world.funnel_and_hook([RULES[0]])
    t0 = world.clock.now_s
    await world.feed(canonical("a", "visit", t0))
    world.clock.now_s = t0 + 7 * DAY + 5 * 3600
    await world.firer.fire_due()
    claimed = await world.worker._claim()  # claimed, then the process dies before sending
    assert len(claimed) == 1
    assert await world.worker.run_once() == 0  # leased: nobody else sends it yet
    world.clock.now_s += 61
    assert await world.worker.run_once() == 1
    assert list(world.receiver.unique()) == [claimed[0].message_id]


async def test_replay_sends_a_delivery_again_with_the_same_id(world):
    hook_id = await world.funnel_and_hook([RULES[0]])
    t0 = world.clock.now_s
    await world.feed(canonical("a", "visit", t0))
    await world.advance_to(t0 + 8 * DAY)
    [delivery] = (await world.api.get(f"/v1/webhooks/{hook_id}/deliveries")).json()["deliveries"]
    assert delivery["status"] == "delivered"
    r = await world.api.post(f"/v1/webhooks/{hook_id}/deliveries/{delivery['id']}/replay")
    assert r.status_code == 200
    await world.advance_to(world.clock.now_s + 1)
    assert [m["id"] for m in world.receiver.received] == [delivery["webhook_id"]] * 2


async def test_rotated_secret_signs_beside_the_old_one(world):
    hook_id = await world.funnel_and_hook(
        [{"name": "soon", "after_seconds": 60, "grace_seconds": 0}]
    )
    t0 = world.clock.now_s
    await world.feed(canonical("a", "visit", t0))
    old_secret = world.receiver.secret
    rotated = (await world.api.post(f"/v1/webhooks/{hook_id}/rotate-secret")).json()
    assert rotated["secret"] != old_secret
    await world.advance_to(t0 + 120, step_s=30)  # the receiver knows only the old secret
    [delivery] = (await world.api.get(f"/v1/webhooks/{hook_id}/deliveries")).json()["deliveries"]
    world.receiver.secret = rotated["secret"]  # and now only the new one
    await world.api.post(f"/v1/webhooks/{hook_id}/deliveries/{delivery['id']}/replay")
    await world.advance_to(world.clock.now_s + 1)
    assert len(world.receiver.received) == 2
    assert world.receiver.bad_signatures == 0


async def test_history_replayed_into_a_new_rule_fires_nothing(world):
    await world.funnel_and_hook([RULES[0]])
    long_ago = world.clock.now_s - 60 * DAY
    await world.feed(canonical("old", "visit", long_ago))
    await world.advance_to(world.clock.now_s + DAY)
    assert fired(world.receiver) == {}


async def test_private_webhook_urls_are_refused_unless_allowed(world):
    r = await world.api.post(
        "/v1/webhooks", json={"url": "http://10.1.2.3/hook", "event_types": ["remarketing.due"]}
    )
    assert r.status_code == 422
    [problem] = r.json()["detail"]
    assert problem["field"] == "url"
    assert "10.1.2.3 is a private (10.0.0.0/8) address" in problem["reason"]


async def test_steps_reached_and_conversions_are_announced_once_live_only(world):
    funnel = {"name": "live", "steps": [{"event": "visit"}, {"event": "signup"}, {"event": "buy"}]}
    funnel_id = (await world.api.post("/v1/funnels", json=funnel)).json()["id"]
    hook = await world.api.post(
        "/v1/webhooks",
        json={
            "url": world.receiver.url,
            "event_types": ["funnel.step_reached", "funnel.converted"],
        },
    )
    world.receiver.secret = hook.json()["secret"]
    await world.feed()  # the new funnel's (empty) backfill completes; from now on it is live
    t0 = world.clock.now_s
    await world.feed(canonical("old", "visit", t0 - 10))
    await world.feed(canonical("p", "visit", t0), canonical("p", "signup", t0 + 1))
    await world.feed(canonical("p", "buy", t0 + 2), canonical("p", "signup", t0 + 1))  # dup
    await world.advance_to(t0 + 5, step_s=1)
    got = sorted(
        (m["type"], m["data"]["person_id"], m["data"]["step"]["step"])
        for m in world.receiver.unique().values()
        if m["data"]["funnel"]["id"] == funnel_id
    )
    assert got == [
        ("funnel.converted", "p", 3),
        ("funnel.step_reached", "old", 1),
        ("funnel.step_reached", "p", 1),
        ("funnel.step_reached", "p", 2),
        ("funnel.step_reached", "p", 3),
    ]
    # A funnel defined now is backfilled from the same history silently.
    later = (await world.api.post("/v1/funnels", json={**funnel, "name": "later"})).json()["id"]
    await world.feed()
    await world.advance_to(world.clock.now_s + 5, step_s=1)
    assert all(m["data"]["funnel"]["id"] != later for m in world.receiver.unique().values())
    assert world.receiver.duplicates() == 0


async def test_concurrent_delivery_workers_send_each_webhook_once(world):
    await world.funnel_and_hook([{"name": "soon", "after_seconds": 60, "grace_seconds": 0}])
    t0 = world.clock.now_s
    await world.feed(*(canonical(f"p{i}", "visit", t0) for i in range(120)))
    world.clock.now_s = t0 + 61
    await world.firer.fire_due()
    workers = [
        DeliveryWorker(world.sessions, world.sender, world.clock, batch=10) for _ in range(3)
    ]
    for _ in range(20):  # a failed attempt (if any) is retried once the clock reaches it
        while sum(await asyncio.gather(*(w.run_once() for w in workers))):
            pass
        world.clock.now_s += 10
    assert len(world.receiver.received) == 120
    assert world.receiver.duplicates() == 0


def ided(name: str, at_s: float, *, user: str | None = None, anon: str | None = None):
    """An event with the SDK's ids: a user id, an anonymous id or both."""
    e = canonical(user or anon or "", name, at_s)
    e.user_id, e.anonymous_id = user, anon
    return e


async def test_an_identified_visitor_is_one_person_for_remarketing(world):
    await world.funnel_and_hook([RULES[0]])
    t0 = world.clock.now_s
    await world.feed(ided("visit", t0, anon="anon-buys"), ided("visit", t0, anon="anon-waits"))
    await world.advance_to(t0 + 3 * DAY)
    await world.feed(
        ided("signup", t0 + 3 * DAY, user="buyer", anon="anon-buys"),
        ided("signup", t0 + 3 * DAY, user="waiter", anon="anon-waits"),
    )
    await world.advance_to(t0 + 5 * DAY)
    await world.feed(ided("buy", t0 + 5 * DAY, user="buyer"))
    await world.advance_to(t0 + 20 * DAY, step_s=6 * 3600)
    assert fired(world.receiver) == {"waiter": [("7-day", 0)]}
    (message,) = world.receiver.unique().values()
    assert message["data"]["ids"] == ["waiter", "anon-waits"]
    assert world.receiver.duplicates() == 0


async def test_a_timer_fired_before_the_merge_does_not_fire_again(world):
    await world.funnel_and_hook([RULES[0]])
    t0 = world.clock.now_s
    await world.feed(ided("visit", t0, anon="anon"))
    await world.advance_to(t0 + 8 * DAY)  # fired under the anonymous id
    await world.feed(ided("signup", t0 + 8 * DAY, user="user", anon="anon"))
    await world.advance_to(t0 + 20 * DAY, step_s=6 * 3600)
    assert fired(world.receiver) == {"anon": [("7-day", 0)]}


async def test_steps_announced_under_the_anonymous_id_are_not_announced_again(world):
    await world.funnel_and_hook([RULES[0]])
    hook = await world.api.post(
        "/v1/webhooks", json={"url": world.receiver.url, "event_types": ["funnel.step_reached"]}
    )
    assert hook.status_code == 201, hook.text
    world.receiver.secret = hook.json()["secret"]
    while await world.processor.backfill_step(100):
        pass  # live from the first event on: a backfill announces nothing
    t0 = world.clock.now_s
    await world.feed(ided("visit", t0, anon="anon"))
    await world.feed(ided("signup", t0 + 60, user="user", anon="anon"))
    await world.feed(ided("buy", t0 + 120, user="user"))
    await world.advance_to(t0 + 3600)
    steps = sorted(
        (m["data"]["step"]["step"], m["data"]["person_id"], tuple(m["data"]["ids"]))
        for m in world.receiver.unique().values()
        if m["type"] == "funnel.step_reached"
    )
    assert steps == [
        (1, "anon", ("anon",)),
        (2, "user", ("user", "anon")),
        (3, "user", ("user", "anon")),
    ]
