"""Every report option through real databases: random streams go through the aggregator,
then each report is computed as the API computes it (stored entries in PostgreSQL or Python,
raw events for global filters, ad-hoc breakdowns and all-events attribution) and compared with
the oracle; and each option once through the HTTP API with numbers worked out by hand."""

from __future__ import annotations

import asyncio
import itertools
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.aggregator.engine import PersonEvent
from services.aggregator.processor import Processor
from services.api.app import create_app
from services.api.reports.computation import compute_report, counted_in_range
from services.api.reports.histogram import histogram, samples_s
from services.api.reports.python import Breakdown, Window
from services.api.repository import funnels as api_funnels
from services.api.settings import ApiSettings
from shared.clock import now_us
from shared.db import create_engine, sessionmaker
from shared.funnel import US, Condition, definition_from_doc
from tests.helpers import canonical, create_key, records
from tests.integration.test_aggregator_properties import BASE_US, as_canonical
from tests.oracle import oracle_histogram, oracle_report
from tests.unit.test_engine_properties import assert_steps_equal, definitions, streams

_projects = itertools.count()
_partitions = itertools.count(50_000)

asks = st.tuples(
    st.integers(-2, 20),  # range start, 10 s steps from the base
    st.integers(0, 25),  # range length
    st.integers(0, 40),  # now
    st.sampled_from(["uniques", "totals"]),
    st.sampled_from([None, "first_touch", "last_touch", "step", "all_events"]),
    st.integers(1, 4),  # attributed step
    st.sampled_from(["ch", "n"]),  # declared or ad hoc
    st.sampled_from([None, "s"]),  # global filter ch = value
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    doc=definitions(optional=True), events=streams(), asked=st.lists(asks, min_size=1, max_size=3)
)
def test_reports_through_the_database_equal_the_oracle(database_url, doc, events, asked):
    asyncio.run(_check(database_url, doc, events, asked))


async def _check(url, doc, events, asked) -> None:
    engine = create_engine(url)
    sessions = sessionmaker(engine)
    try:
        project = f"opt{next(_projects)}"
        async with sessions.begin() as session:
            await create_key(session, project, "admin")
            funnel_id = await api_funnels.create_funnel(
                session, project, {"name": "o", **doc}, now_us=now_us()
            )
        processor = Processor(sessions, f"group-{project}", horizon_us=lambda: 0)
        flat = [as_canonical(project, p, e) for p, evs in events.items() for e in evs]
        for i in range(0, len(flat), 6):
            await processor.apply(records(flat[i : i + 6], partition=next(_partitions)), {})
        while await processor.backfill_step(50):
            pass
        f = definition_from_doc(doc)
        shifted = {
            p: [PersonEvent(e.event_id, BASE_US + e.ts, e.name, e.properties) for e in evs]
            for p, evs in events.items()
        }
        for lo, length, now, count, attribution, step, prop, filtered in asked:
            start = BASE_US + lo * 10 * US
            window = Window(start, start + length * 10 * US, BASE_US + now * 10 * US)
            filters = (Condition("ch", "eq", filtered),) if filtered else ()
            chosen, told = None, "first_touch"
            if attribution is not None:
                k = min(step, len(f.steps))
                chosen = Breakdown(prop, attribution, k, limit=100)
                told = f"step:{k}" if attribution == "step" else attribution
            async with sessions.begin() as session:
                got = await compute_report(
                    session, (project, funnel_id), f, window, count, chosen, filters
                )
                counted = await counted_in_range(
                    session, (project, funnel_id), f, window, count, filters
                )
            want = oracle_report(
                f, shifted, window.start, window.end, window.now, count,
                prop if chosen else None, told, filters,
            )  # fmt: skip
            assert_steps_equal(got.steps, want.steps)
            assert {g.value for g in got.groups} == set(want.group_steps)
            for g in got.groups:
                assert_steps_equal(g.steps, want.group_steps[g.value])
                assert g.comparison is not None
                assert g.comparison.significant == want.comparisons[g.value].significant
            bins, mean = oracle_histogram(
                f, shifted, window.start, window.end, count=count, filters=filters
            )
            found = histogram(samples_s(counted, 1, len(f.steps)))
            assert [(b.start_s, b.units) for b in found.bins] == [(float(s), n) for s, n in bins]
            assert found.mean_s == pytest.approx(mean)
    finally:
        await engine.dispose()


T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
RANGE = {"from": "2026-01-01", "to": "2026-01-02"}


@pytest.fixture
async def api(database_url, sessions):
    async with sessions.begin() as session:
        key = await create_key(session, "proj", "admin")
    app = create_app(ApiSettings(database_url=database_url, report_max_stale_s=0))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers=headers
        ) as client:
            yield client


async def _stored(api, sessions, doc, events) -> str:
    created = await api.post("/v1/funnels", json={"name": "f", **doc})
    assert created.status_code == 201, created.text
    processor = Processor(sessions, "g", horizon_us=lambda: 0)
    await processor.apply(records(events, partition=next(_partitions)), {})
    while await processor.backfill_step(100):
        pass
    return str(created.json()["id"])


async def _report(api, funnel_id, **params):
    r = await api.get(f"/v1/funnels/{funnel_id}/report", params={**RANGE, **params})
    assert r.status_code == 200, r.text
    return r.json()


def _persons(steps) -> list[int]:
    return [s["persons"] for s in steps]


def _groups(body) -> dict:
    return {g["value"]: _persons(g["steps"]) for g in body["breakdown"]["groups"]}


STEPS = [{"event": "visit"}, {"event": "signup"}, {"event": "pay"}]


async def test_filters_ad_hoc_breakdowns_and_all_events_through_the_api(api, sessions):
    doc = {"steps": STEPS, "window_seconds": 3600}
    funnel_id = await _stored(
        api,
        sessions,
        doc,
        [
            canonical("p", "visit", T0, country="DE", plan="pro"),
            canonical("p", "signup", T0 + 10, country="DE", plan="pro"),
            canonical("p", "pay", T0 + 20, country="FR", plan="free"),
            canonical("q", "visit", T0, country="FR", plan="free"),
            canonical("q", "signup", T0 + 30, country="FR", plan="free"),
            canonical("q", "pay", T0 + 90, country="FR", plan="free"),
        ],
    )
    assert _persons((await _report(api, funnel_id))["steps"]) == [2, 2, 2]
    # Only events with country DE are seen: p's payment (FR) and all of q are not.
    de = json.dumps([{"property": "country", "value": "DE"}])
    body = await _report(api, funnel_id, filters=de)
    assert _persons(body["steps"]) == [1, 1, 0]
    assert body["filters"] == [{"property": "country", "op": "eq", "value": "DE"}]
    # plan is not declared: first touch by any property.
    assert _groups(await _report(api, funnel_id, breakdown="plan")) == {
        "pro": [1, 1, 1],
        "free": [1, 1, 1],
    }
    # All events: p's pro events reach step 2, p's free event is no step 1; q all free.
    body = await _report(api, funnel_id, breakdown="plan", attribution="all_events")
    assert _groups(body) == {"pro": [1, 1, 0], "free": [1, 1, 1]}
    # The step attribution of the last step: p paid as free.
    body = await _report(api, funnel_id, breakdown="plan", attribution="step", step=3)
    assert _groups(body) == {"free": [2, 2, 2]}


async def test_optional_steps_step_groups_and_comparisons_through_the_api(api, sessions):
    doc = {
        "steps": [STEPS[0], {**STEPS[1], "optional": True}, STEPS[2]],
        "window_seconds": 3600,
        "breakdowns": ["channel"],
    }
    events = [canonical("p", "visit", T0, channel="ads"), canonical("p", "pay", T0 + 50)]
    events += [
        canonical("q", "visit", T0, channel="ads"),
        canonical("q", "signup", T0 + 5, channel="ads"),
    ]
    for i in range(30):
        events.append(canonical(f"r{i}", "visit", T0, channel="mail"))
        if i < 3:
            events.append(canonical(f"r{i}", "signup", T0 + 10, channel="mail"))
    funnel_id = await _stored(api, sessions, doc, events)
    body = await _report(api, funnel_id)
    # The optional step counts who did it (4); the payment was reached without it.
    assert _persons(body["steps"]) == [32, 4, 1]
    assert body["steps"][2]["time_from_previous"]["median_s"] == 50
    body = await _report(api, funnel_id, breakdown="channel", attribution="step", step=2)
    assert _groups(body) == {"ads": [1, 1, 0], "mail": [3, 3, 0]}  # who never signed up: none
    body = await _report(api, funnel_id, breakdown="channel")
    ads = next(g for g in body["breakdown"]["groups"] if g["value"] == "ads")["comparison"]
    assert (ads["entered"], ads["converted"], ads["rest_entered"], ads["rest_converted"]) == (
        2,
        1,
        30,
        0,
    )
    assert ads["low"] < 0.5 < ads["high"]
    assert ads["significant"] is True


async def test_time_to_convert_through_the_api(api, sessions):
    doc = {"steps": STEPS, "window_seconds": 3600}
    events = []
    for i, took in enumerate([10, 20, 30, 100, 400]):
        events += [canonical(f"p{i}", "visit", T0), canonical(f"p{i}", "pay", T0 + took)]
        events.append(canonical(f"p{i}", "signup", T0 + 1))
    funnel_id = await _stored(api, sessions, doc, events)
    url = f"/v1/funnels/{funnel_id}/time-to-convert"
    body = (await api.get(url, params=RANGE)).json()
    # 5 samples: ceil(cbrt(5)) = 2 bins of ceil((400 - 10) / 2) = 195 s, and one more for
    # the greatest sample.
    assert [(b["start_s"], b["units"]) for b in body["bins"]] == [(10, 4), (205, 0), (400, 1)]
    assert (body["conversions"], body["mean_s"], body["median_s"]) == (5, 112, 30)
    body = (await api.get(url, params={**RANGE, "bins": "0,60,3600", "to_step": 3})).json()
    assert [(b["start_s"], b["end_s"], b["units"]) for b in body["bins"]] == [
        (0, 60, 3),
        (60, 3600, 2),
    ]
    body = (await api.get(url, params={**RANGE, "from_step": 2, "to_step": 3})).json()
    assert body["conversions"] == 5
    assert body["median_s"] == 29
