"""Re-marketing after an identity merge, day-scale rules on a clock the test moves: a pending
timer of the anonymous journey becomes the merged person's, one fired under the anonymous id
is never sent again, the goal under either id cancels, payloads name the person and its ids."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest

from services.api.app import create_app
from services.api.settings import ApiSettings
from shared.events import CanonicalEvent
from tests.helpers import canonical, create_key
from tests.integration.test_remarketing import DAY, LOOPBACK, RULES, ManualClock, World
from tests.receiver import Receiver


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
            w = World(sessions, api, receiver, ManualClock(time.time() + 3600))
            yield w
            await w.sender.close()
    receiver.stop()


def anon(x: str, name: str, at_s: float) -> CanonicalEvent:
    e = canonical(x, name, at_s)
    e.user_id, e.anonymous_id = None, x
    return e


def identify(x: str, u: str, at_s: float) -> CanonicalEvent:
    e = canonical(u, "identify", at_s)
    e.anonymous_id = x
    return e


def sent(receiver: Receiver) -> Counter[tuple[str, tuple[str, ...], str, int]]:
    return Counter(
        (
            m["data"]["person_id"],
            tuple(m["data"].get("ids", ())),
            m["data"]["rule"]["name"],
            m["data"]["rule"]["occurrence"],
        )
        for m in receiver.unique().values()
    )


async def test_identify_on_day_3_and_buy_on_day_5_sends_nothing_and_the_others_once(world):
    await world.funnel_and_hook()
    t0 = world.clock.now_s
    await world.feed(*(anon(x, "visit", t0) for x in ("x-buyer", "x-stays", "x-late", "x-goal")))
    await world.advance_to(t0 + 3 * DAY)
    await world.feed(
        identify("x-buyer", "u-buyer", t0 + 3 * DAY),
        identify("x-stays", "u-stays", t0 + 3 * DAY),
        identify("x-goal", "u-goal", t0 + 3 * DAY),
    )
    await world.advance_to(t0 + 5 * DAY)
    await world.feed(
        canonical("u-buyer", "buy", t0 + 5 * DAY),
        anon("x-goal", "buy", t0 + 5 * DAY),  # the goal under the anonymous id cancels too
    )
    await world.advance_to(t0 + 8 * DAY)  # the 7-day trigger of x-late has fired
    await world.feed(identify("x-late", "u-late", t0 + 8 * DAY))
    await world.advance_to(t0 + 120 * DAY, step_s=6 * 3600)
    series = [("90-day", k) for k in range(6)]  # days 14, 28, 42, 56, 70, 84
    stays, late = ("u-stays", "x-stays"), ("u-late", "x-late")
    assert sent(world.receiver) == Counter(
        [
            ("u-stays", stays, "7-day", 0),
            *(("u-stays", stays, rule, k) for rule, k in series),
            ("x-late", ("x-late",), "7-day", 0),  # fired before the link: never again
            *(("u-late", late, rule, k) for rule, k in series),
        ]
    )
    assert world.receiver.duplicates() == 0
    assert world.receiver.bad_signatures == 0


async def test_a_link_arriving_after_the_merged_persons_trigger_would_have_fired_sends_once(
    world,
):
    """The identify is late: it arrives on day 10, though it happened on day 3, and the user
    bought on day 5. The anonymous trigger fired on day 7 (nothing said otherwise then); the
    merged person's is cancelled, and it is not sent a second time under the user id."""
    await world.funnel_and_hook(rules=[RULES[0]])
    t0 = world.clock.now_s
    await world.feed(anon("x", "visit", t0), canonical("u", "buy", t0 + 5 * DAY))
    await world.advance_to(t0 + 10 * DAY)
    await world.feed(identify("x", "u", t0 + 3 * DAY))
    await world.advance_to(t0 + 30 * DAY)
    assert sent(world.receiver) == Counter([("x", ("x",), "7-day", 0)])
