"""The query API against real databases: resources, errors, and reports over stored progress."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import httpx
import pytest
from prometheus_client import REGISTRY

from services.aggregator.processor import Processor
from services.api.app import create_app
from services.api.reports.computation import valid_until
from services.api.reports.python import Window
from services.api.repository import funnels as api_funnels
from services.api.settings import ApiSettings
from shared.clock import now_us
from shared.funnel import US, definition_from_doc
from tests.helpers import canonical, create_key, records

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
RANGE = {"from": "2026-01-01", "to": "2026-01-02"}


@pytest.fixture
async def keys(sessions):
    async with sessions.begin() as session:
        return {
            scope: await create_key(session, "proj", scope) for scope in ("admin", "read", "write")
        }


@pytest.fixture
async def api(database_url, keys):
    # Exact reports only: how fast a tiny report computes on a busy machine must not matter.
    async with _client(ApiSettings(database_url=database_url, report_max_stale_s=0), keys) as c:
        yield c


@contextlib.asynccontextmanager
async def _client(settings: ApiSettings, keys):
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {keys['admin']}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers=headers
        ) as client:
            yield client


_partitions = itertools.count()


async def drain(sessions, batch) -> None:
    processor = Processor(sessions, "g", horizon_us=lambda: 0)
    # A partition of its own per call: each call's records start at offset 0.
    await processor.apply(records(batch, partition=next(_partitions)), {})
    while await processor.backfill_step(100):
        pass


FUNNEL = {"name": "signup", "steps": [{"event": "visit"}, {"event": "signup"}, {"event": "pay"}]}


async def test_funnel_crud(api):
    created = await api.post("/v1/funnels", json=FUNNEL)
    assert created.status_code == 201
    funnel_id = created.json()["id"]
    assert (await api.get(f"/v1/funnels/{funnel_id}")).json()["steps"][2]["event"] == "pay"
    patched = await api.patch(f"/v1/funnels/{funnel_id}", json={"window_seconds": 3600})
    assert (patched.json()["window_seconds"], patched.json()["version"]) == (3600, 2)
    renamed = await api.patch(f"/v1/funnels/{funnel_id}", json={"name": "renamed"})
    assert (renamed.json()["name"], renamed.json()["version"]) == ("renamed", 2)
    assert [f["id"] for f in (await api.get("/v1/funnels")).json()["funnels"]] == [funnel_id]
    assert (await api.delete(f"/v1/funnels/{funnel_id}")).status_code == 204
    assert (await api.get(f"/v1/funnels/{funnel_id}")).status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"steps": [{"event": "a"}]}, "steps"),
        ({"steps": [{"event": "a"}] * 33}, "steps"),
        ({"window_seconds": 0}, "window_seconds"),
        ({"window_seconds": 366 * 86400 + 1}, "window_seconds"),
        ({"count": "people"}, "count"),
        ({"order": "random"}, "order"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_invalid_definitions_are_422_naming_the_field(api, change, field):
    r = await api.post("/v1/funnels", json={**FUNNEL, **change})
    assert r.status_code == 422
    assert field in [e["field"].split(".")[0] for e in r.json()["detail"]]


def _refusal(r):
    return r.status_code, [(e["field"], e["reason"]) for e in r.json()["detail"]]


async def test_keys_are_checked(api, keys):
    missing = await api.get("/v1/funnels", headers={"Authorization": ""})
    assert _refusal(missing) == (401, [("authorization", "an API key is required (Bearer)")])
    assert missing.headers["www-authenticate"] == "Bearer"
    unknown = await api.get("/v1/funnels", headers={"Authorization": "Bearer nope"})
    assert _refusal(unknown) == (401, [("authorization", "unknown or revoked API key")])
    read = {"Authorization": f"Bearer {keys['read']}"}
    assert (await api.get("/v1/funnels", headers=read)).status_code == 200
    status, [(field, reason)] = _refusal(await api.post("/v1/funnels", json=FUNNEL, headers=read))
    assert (status, field, reason) == (403, "authorization", "this needs an admin key")
    write = {"Authorization": f"Bearer {keys['write']}"}
    status, [(field, reason)] = _refusal(await api.get("/v1/funnels", headers=write))
    assert (status, field) == (403, "authorization")
    assert "write key cannot read" in reason


async def test_report_range_errors(api):
    funnel_id = (await api.post("/v1/funnels", json=FUNNEL)).json()["id"]
    r = await api.get(
        f"/v1/funnels/{funnel_id}/report", params={"from": "2026-02-01", "to": "2026-01-01"}
    )
    assert (r.status_code, r.json()["detail"]) == (
        400,
        [{"field": "from", "reason": "must not be after to"}],
    )
    r = await api.get(f"/v1/funnels/{funnel_id}/report", params={"from": "soon"})
    assert r.status_code == 400
    assert r.json()["detail"][0]["field"] == "from"
    assert "RFC 3339" in r.json()["detail"][0]["reason"]
    r = await api.get("/v1/funnels/nope/report")
    assert (r.status_code, r.json()["detail"][0]["field"]) == (404, "funnel_id")


async def test_report_counts_persons_per_step(api, sessions):
    funnel_id = (await api.post("/v1/funnels", json=FUNNEL)).json()["id"]
    await drain(
        sessions,
        [
            canonical("p", "visit", T0),
            canonical("p", "signup", T0 + 60),
            canonical("p", "pay", T0 + 120),
            canonical("q", "visit", T0 + 10),
            canonical("q", "signup", T0 + 130),
            canonical("r", "visit", T0 + 20),
            canonical("s", "visit", T0 + 86_400 * 3),  # outside the range
        ],
    )
    body = (await api.get(f"/v1/funnels/{funnel_id}/report", params=RANGE)).json()
    assert [s["persons"] for s in body["steps"]] == [3, 2, 1]
    assert body["steps"][1]["conversion_from_previous"] == pytest.approx(2 / 3)
    assert body["steps"][1]["time_from_previous"]["median_s"] == pytest.approx(90)
    assert body["overall_conversion"] == pytest.approx(1 / 3)
    assert body["backfill"]["done"] is True


async def test_report_shows_backfill_progress_with_a_kept_total(api, sessions):
    processor = Processor(sessions, "backfill-progress", horizon_us=lambda: 0)
    history = [canonical(p, "visit", T0) for p in ("p", "q", "r")]
    await processor.apply(records(history, partition=next(_partitions)), {})
    funnel_id = (await api.post("/v1/funnels", json=FUNNEL)).json()["id"]
    await processor.backfill_step(1)
    body = (await api.get(f"/v1/funnels/{funnel_id}/report", params=RANGE)).json()
    assert body["backfill"] == {"done": False, "persons_done": 1, "persons_total": 3}
    # A new person: the total is counted again only after PERSONS_TTL_S (it reads every event).
    await processor.apply(records([canonical("s", "visit", T0)], partition=next(_partitions)), {})
    body = (await api.get(f"/v1/funnels/{funnel_id}/report", params=RANGE)).json()
    assert body["backfill"]["persons_total"] == 3
    while await processor.backfill_step(1):
        pass
    body = (await api.get(f"/v1/funnels/{funnel_id}/report", params=RANGE)).json()
    assert body["backfill"] == {"done": True, "persons_done": 4, "persons_total": None}


async def test_report_breakdown_by_first_touch(api, sessions):
    funnel_id = (await api.post("/v1/funnels", json={**FUNNEL, "breakdowns": ["channel"]})).json()[
        "id"
    ]
    await drain(
        sessions,
        [
            canonical("p", "visit", T0, channel="ads"),
            canonical("p", "signup", T0 + 1, channel="mail"),
            canonical("q", "visit", T0),
            canonical("r", "visit", T0, channel="mail"),
            canonical("r", "signup", T0 + 5),
        ],
    )
    params = {**RANGE, "breakdown": "channel"}
    body = (await api.get(f"/v1/funnels/{funnel_id}/report", params=params)).json()
    groups = {g["value"]: [s["persons"] for s in g["steps"]] for g in body["breakdown"]["groups"]}
    assert groups == {"ads": [1, 1, 0], "mail": [1, 1, 0], None: [1, 0, 0]}
    # Any event property, not only a declared one (evaluated from the raw events).
    r = await api.get(f"/v1/funnels/{funnel_id}/report", params={**RANGE, "breakdown": "plan"})
    assert r.status_code == 200
    assert [g["value"] for g in r.json()["breakdown"]["groups"]] == [None]


async def test_report_is_served_from_cache_until_the_stored_state_changes(api, sessions):
    funnel_id = (await api.post("/v1/funnels", json=FUNNEL)).json()["id"]
    await drain(sessions, [canonical("p", "visit", T0), canonical("p", "signup", T0 + 60)])
    url = f"/v1/funnels/{funnel_id}/report"
    first = (await api.get(url, params=RANGE)).json()
    again = (await api.get(url, params=RANGE)).json()
    assert (first["cached"], again["cached"]) == (False, True)
    assert again["steps"] == first["steps"]
    assert again["computed_at"] == first["computed_at"]
    # Other parameters are another report; no-cache computes anew.
    assert (await api.get(url, params={**RANGE, "count": "totals"})).json()["cached"] is False
    forced = await api.get(url, params=RANGE, headers={"Cache-Control": "no-cache"})
    assert forced.json()["cached"] is False
    # A committed batch moves the stamp: the next read is computed and sees the new person.
    await drain(sessions, [canonical("q", "visit", T0 + 5)])
    after = (await api.get(url, params=RANGE)).json()
    assert after["cached"] is False
    assert [s["persons"] for s in after["steps"]] == [2, 1, 0]
    # So does a new definition.
    await api.patch(f"/v1/funnels/{funnel_id}", json={"steps": FUNNEL["steps"][:2]})
    await drain(sessions, [])
    redefined = (await api.get(url, params=RANGE)).json()
    assert (redefined["cached"], len(redefined["steps"])) == (False, 2)


async def test_a_batch_that_leaves_a_funnel_alone_keeps_its_reports_exact(api, sessions):
    signup_id = (await api.post("/v1/funnels", json=FUNNEL)).json()["id"]
    other = {"name": "support", "steps": [{"event": "ticket"}, {"event": "solved"}]}
    support_id = (await api.post("/v1/funnels", json=other)).json()["id"]
    await drain(sessions, [canonical("p", "visit", T0), canonical("p", "ticket", T0 + 1)])
    signup, support = (f"/v1/funnels/{i}/report" for i in (signup_id, support_id))
    for url in (signup, support):
        assert (await api.get(url, params=RANGE)).json()["cached"] is False
    # Events of the support funnel only: the signup funnel's kept report is still exact.
    await drain(sessions, [canonical("q", "ticket", T0 + 2), canonical("q", "solved", T0 + 3)])
    kept = (await api.get(signup, params=RANGE)).json()
    assert (kept["cached"], kept["stale"], kept["steps"][0]["persons"]) == (True, False, 1)
    moved = (await api.get(support, params=RANGE)).json()
    assert moved["cached"] is False
    assert [s["persons"] for s in moved["steps"]] == [2, 1]
    # An event of no funnel's steps, and a duplicate of a stored one, change nothing either.
    await drain(sessions, [canonical("r", "browse", T0 + 4), canonical("p", "visit", T0)])
    assert (await api.get(support, params=RANGE)).json()["cached"] is True
    # A later signup step for p moves the signup funnel again.
    await drain(sessions, [canonical("p", "signup", T0 + 5)])
    after = (await api.get(signup, params=RANGE)).json()
    assert (after["cached"], [s["persons"] for s in after["steps"]]) == (False, [1, 1, 0])


STALE_ANSWERS = "funnel_api_reports_total"


async def test_slow_report_is_served_stale_while_a_refresh_runs(database_url, sessions, keys):
    # Every report counts as slow here, so an inexact kept one is served stale for 60 s.
    settings = ApiSettings(
        database_url=database_url, report_max_stale_s=60, report_stale_after_ms=0
    )
    async with _client(settings, keys) as api:
        funnel_id = (await api.post("/v1/funnels", json=FUNNEL)).json()["id"]
        await drain(sessions, [canonical("p", "visit", T0), canonical("p", "signup", T0 + 60)])
        url = f"/v1/funnels/{funnel_id}/report"
        first = (await api.get(url, params=RANGE)).json()
        assert (first["cached"], first["stale"]) == (False, False)
        await drain(sessions, [canonical("q", "visit", T0 + 5)])
        # The stored state moved: the kept report is answered at once, marked stale ...
        served_stale = REGISTRY.get_sample_value(STALE_ANSWERS, {"freshness": "stale"}) or 0
        stale = (await api.get(url, params=RANGE)).json()
        assert REGISTRY.get_sample_value(STALE_ANSWERS, {"freshness": "stale"}) == served_stale + 1
        assert (stale["cached"], stale["stale"]) == (True, True)
        assert [s["persons"] for s in stale["steps"]] == [1, 1, 0]
        assert stale["computed_at"] == first["computed_at"]
        # ... while one computation of the current state runs; a later read gets it, exact.
        for _ in range(100):
            now = (await api.get(url, params=RANGE)).json()
            if not now["stale"]:
                break
            await asyncio.sleep(0.05)
        assert (now["cached"], now["stale"]) == (True, False)
        assert [s["persons"] for s in now["steps"]] == [2, 1, 0]
        # no-cache always computes the current state.
        await drain(sessions, [canonical("r", "visit", T0 + 9)])
        forced = await api.get(url, params=RANGE, headers={"Cache-Control": "no-cache"})
        assert (forced.json()["cached"], [s["persons"] for s in forced.json()["steps"]]) == (
            False,
            [3, 1, 0],
        )


async def test_cached_report_expires_when_an_entry_window_closes(sessions, keys):
    doc = {**FUNNEL, "window_seconds": 600}
    async with sessions.begin() as session:
        funnel_id = await api_funnels.create_funnel(session, "proj", doc, now_us=now_us())
    await drain(
        sessions,
        [
            canonical("p", "visit", T0),
            canonical("q", "visit", T0 + 100),
            canonical("r", "visit", T0 + 86_400 * 2),  # dated after the range
        ],
    )
    definition = definition_from_doc(doc)
    start, end = T0 * US, (T0 + 86_400) * US
    async with sessions() as session:
        # At T0 + 300 s both windows are open: p's closes first, at T0 + 600 s.
        at = await valid_until(
            session,
            funnel_id,
            definition,
            Window(start, end, (T0 + 300) * US),
            open_end=False,
            rolling=None,
        )
        assert at == (T0 + 600) * US
        # Past p's close, q's is next; past both, nothing in the range changes with time ...
        at = await valid_until(
            session,
            funnel_id,
            definition,
            Window(start, end, (T0 + 600) * US),
            open_end=False,
            rolling=None,
        )
        assert at == (T0 + 700) * US
        # ... unless the range ends now: then r's entry joins it once the clock passes r's t0.
        at = await valid_until(
            session,
            funnel_id,
            definition,
            Window(start, (T0 + 1000) * US, (T0 + 1000) * US),
            open_end=True,
            rolling=None,
        )
        assert at == (T0 + 86_400 * 2) * US + 1
        # A rolling range (from = to - 1 day) loses p's entry once it starts after p's t0.
        at = await valid_until(
            session,
            funnel_id,
            definition,
            Window(start, end, end),
            open_end=True,
            rolling=86_400 * US,
        )
        assert at == T0 * US + 86_400 * US + 1


async def test_cold_reports_come_from_the_columnar_replica_and_equal_the_database(
    database_url, keys, sessions
):
    """Once the replica holds the funnel (loaded on the first report), cold reports are
    computed from it, after it has caught up with batches committed since (a late event):
    the same answer as with API_READ_ENGINE=database."""
    doc = {**FUNNEL, "breakdowns": ["channel"]}
    app = create_app(ApiSettings(database_url=database_url, report_max_stale_s=0))
    async with app.router.lifespan_context(app):
        headers = {"Authorization": f"Bearer {keys['admin']}", "Cache-Control": "no-cache"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers=headers
        ) as api:
            funnel_id = (await api.post("/v1/funnels", json=doc)).json()["id"]
            await drain(sessions, [canonical("p", "visit", T0 + 10, channel="ads")])
            url = f"/v1/funnels/{funnel_id}/report"
            params = {**RANGE, "breakdown": "channel"}
            await api.get(url, params=params)
            replica = app.state.api.reports.replica
            await replica.loaded(funnel_id)
            assert replica.holds(funnel_id, 1)
            # Late: q's first touch comes before p's in time; p converts.
            await drain(
                sessions,
                [
                    canonical("q", "visit", T0, channel="mail"),
                    canonical("p", "signup", T0 + 20),
                    canonical("p", "visit", T0 + 10, channel="ads"),  # again
                ],
            )
            served = replica.served
            got = [(await api.get(url, params=p)).json() for p in (params, RANGE)]
            assert replica.served == served + 2
    async with _client(ApiSettings(database_url=database_url, read_engine="database"), keys) as db:
        expected = [
            (await db.get(url, params=p, headers={"Cache-Control": "no-cache"})).json()
            for p in (params, RANGE)
        ]
    for a, b in zip(got, expected, strict=True):
        assert a["steps"] == b["steps"]
        assert a.get("breakdown") == b.get("breakdown")
    assert [s["persons"] for s in got[1]["steps"]] == [2, 1, 0]
    groups = {g["value"]: g["steps"][1]["persons"] for g in got[0]["breakdown"]["groups"]}
    assert groups == {"ads": 1, "mail": 0}
