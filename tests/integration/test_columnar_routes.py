"""The trends, forecast and diagnosis routes and the app's gauge refresher read the columnar
replica once it holds the funnel (loaded in the background after the first request asked),
after it has caught up with a late and duplicated batch: the same answers as with
API_READ_ENGINE=database, and ``replica.served`` grows by one per answer."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx

from services.api.app import create_app
from services.api.settings import ApiSettings
from shared.clock import US, FixedClock
from tests.helpers import canonical
from tests.integration.test_metrics import step_gauges
from tests.integration.test_query_api import T0, drain, keys  # noqa: F401 - fixtures

DAY = 86_400
NOW = T0 + 2 * DAY
FUNNEL = {
    "name": "series",
    "steps": [{"event": "visit"}, {"event": "signup"}, {"event": "pay"}],
    "window_seconds": DAY,
    "value_property": "amount",
    "breakdowns": ["channel"],
}
# Two daily cohorts; q's window closes exactly at "now" (closed, not in progress).
ASKED = [
    ("trends", {"from": "2026-01-01", "to": "2026-01-03", "interval": "day"}),
    ("trends", {"from": "2026-01-01", "to": "2026-01-03", "count": "totals"}),
    ("forecast", {"from": "2026-01-01", "to": "2026-01-03"}),
    ("forecast", {"from": "2026-01-01", "to": "2026-01-03", "count": "uniques"}),
    ("diagnosis", {"from": "2026-01-01", "to": "2026-01-03"}),
]
FIRST = [
    canonical("p", "visit", T0 + 10, channel="ads", amount=5),
    canonical("p", "signup", T0 + 20, amount=7),
    canonical("q", "visit", T0 + DAY, channel="mail"),
    canonical("r", "visit", T0 + DAY + 100, channel="ads", amount=3),
]
LATER = [
    canonical("p", "visit", T0 + 5, channel="mail"),  # late: p's first touch is now mail
    canonical("r", "signup", T0 + DAY + 200, amount=9),
    canonical("q", "visit", T0 + DAY, channel="mail"),  # again: changes nothing
]


@contextlib.asynccontextmanager
async def _app(settings: ApiSettings, keys):  # noqa: F811
    app = create_app(settings, clock=FixedClock(NOW * US))
    async with app.router.lifespan_context(app):
        headers = {"Authorization": f"Bearer {keys['admin']}", "Cache-Control": "no-cache"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers=headers
        ) as client:
            yield app, client


async def _answers(api: httpx.AsyncClient, funnel_id: str) -> list[dict]:
    found = []
    for route, params in ASKED:
        r = await api.get(f"/v1/funnels/{funnel_id}/{route}", params=params)
        assert r.status_code == 200, r.text
        found.append(r.json())
    return found


async def test_series_routes_and_gauges_read_the_replica_and_equal_the_database(
    database_url,
    keys,  # noqa: F811
    sessions,
):
    settings = ApiSettings(database_url=database_url, report_max_stale_s=0, gauge_refresh_s=0.02)
    async with _app(settings, keys) as (app, api):
        replica = app.state.api.reports.replica
        funnel_id = (await api.post("/v1/funnels", json=FUNNEL)).json()["id"]
        await drain(sessions, FIRST)
        await _answers(api, funnel_id)  # from the database; the replica loads the funnel
        await replica.loaded(funnel_id)
        assert replica.holds(funnel_id, 1)
        before = replica.served
        await drain(sessions, LATER)
        # The app's gauge refresher sees the funnel's progress changed and recomputes its
        # gauges from the replica: no request is made meanwhile.
        deadline = time.monotonic() + 5
        while replica.served == before and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        assert replica.served == before + 1
        persons = await _gauged(api, funnel_id, deadline)  # set just after the computation
        served = replica.served
        got = await _answers(api, funnel_id)
        assert replica.served == served + len(ASKED)
    database = ApiSettings(database_url=database_url, read_engine="database")
    async with _app(database, keys) as (_, db):
        expected = await _answers(db, funnel_id)
    assert got == expected
    trends, totals, forecast, _, diagnosis = got
    assert [c["persons"] for c in trends["cohorts"]] == [[1, 1, 0], [2, 1, 0]]
    assert [c["persons"] for c in totals["cohorts"]] == [[2, 2, 0], [2, 1, 0]]  # p: two entries
    # r is in progress at signup, with its latest amount; q's window has just closed.
    assert [(s["open_entries"], s["value"]) for s in forecast["stages"]] == [(0, 0.0), (1, 9.0)]
    assert diagnosis["best_group"]["value"] == "ads"
    # Gauges over the last 7 days: p, q and r entered; p and r signed up.
    assert persons == [3, 2, 0]


async def _gauged(api: httpx.AsyncClient, funnel_id: str, deadline: float) -> list[float]:
    """The funnel's persons per step on /metrics, once they count the later batch."""
    while True:
        gauges = step_gauges((await api.get("/metrics")).text)
        persons = [gauges["funnel_step_persons", funnel_id, str(k)][0] for k in (1, 2, 3)]
        if persons[1] == 2 or time.monotonic() > deadline:
            return persons
        await asyncio.sleep(0.02)
