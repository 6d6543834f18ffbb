"""Templates, plans, forecasts, trends, diagnosis and the chart against real databases."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from services.api.chart import TRACK
from tests.helpers import canonical
from tests.integration.test_metrics import step_gauges
from tests.integration.test_query_api import api, drain, keys  # noqa: F401 - fixtures

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY = 86_400


async def test_templates_are_listed_with_their_proposed_rules(api):  # noqa: F811
    body = (await api.get("/v1/funnel-templates")).json()
    by_id = {t["id"]: t for t in body["templates"]}
    assert set(by_id) == {"aida", "search_marketing", "ecommerce", "product_growth", "b2b_pipeline"}
    probabilities = [s["win_probability"] for s in by_id["b2b_pipeline"]["steps"]]
    assert probabilities == [0.10, 0.25, 0.50, 0.75, 0.90, 1.00]
    rules = {r["name"]: r for r in by_id["aida"]["remarketing"]}
    assert rules["7-day"]["after_seconds"] == 7 * DAY
    assert (rules["90-day"]["repeat_every_seconds"], rules["90-day"]["until_seconds"]) == (
        14 * DAY,
        90 * DAY,
    )


async def test_unknown_template_is_422_naming_the_field(api):  # noqa: F811
    r = await api.post("/v1/funnels/from-template", json={"template": "astrology"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "template"


async def test_search_marketing_report_names_its_four_rates(api, sessions):  # noqa: F811
    created = await api.post("/v1/funnels/from-template", json={"template": "search_marketing"})
    assert created.status_code == 201
    funnel_id = created.json()["id"]
    names = ["impression", "click", "visit", "inquiry", "order"]
    batch = []
    for i in range(10):  # 10 impressions, 5 clicks, 4 visits, 2 inquiries, 1 order
        reached = 1 + (i < 5) + (i < 4) + (i < 2) + (i < 1)
        batch += [canonical(f"p{i}", names[k], T0 + k) for k in range(reached)]
    await drain(sessions, batch)
    body = (
        await api.get(
            f"/v1/funnels/{funnel_id}/report", params={"from": "2026-01-01", "to": "2026-01-02"}
        )
    ).json()
    assert body["named_rates"] == {
        "click-through rate": 0.5,
        "visit rate": 0.8,
        "inquiry rate": 0.5,
        "order rate": 0.5,
    }


async def test_plan_reproduces_the_briefs_worked_example(api):  # noqa: F811
    funnel_id = (
        await api.post("/v1/funnels/from-template", json={"template": "b2b_pipeline"})
    ).json()["id"]
    body = {
        "target_value": 3_000_000,
        "average_value": 30_000,
        "overall_rate": 0.10,
        "period": "year",
    }
    plan = (await api.post(f"/v1/funnels/{funnel_id}/plan", json=body)).json()
    assert plan["conversions_per_period"] == pytest.approx(100)
    assert plan["entrances_per_period"] == pytest.approx(1000)
    assert round(plan["entrances_per_month"], 1) == 83.3
    assert plan["steps"][0]["persons_needed"] == pytest.approx(1000)


async def test_plan_uses_measured_rates_by_default(api, sessions):  # noqa: F811
    funnel = {"name": "f", "steps": [{"event": "a"}, {"event": "b"}], "window_seconds": 3600}
    funnel_id = (await api.post("/v1/funnels", json=funnel)).json()["id"]
    batch = [canonical(f"p{i}", "a", T0) for i in range(8)] + [
        canonical(f"p{i}", "b", T0 + 1) for i in range(2)
    ]
    await drain(sessions, batch)
    body = {"target_conversions": 50, "period": "month", "from": "2026-01-01", "to": "2026-01-02"}
    plan = (await api.post(f"/v1/funnels/{funnel_id}/plan", json=body)).json()
    assert (plan["rates_source"], plan["step_rates"]) == ("measured", [0.25])
    assert plan["entrances_per_period"] == pytest.approx(200)
    r = await api.post(f"/v1/funnels/{funnel_id}/plan", json={"period": "month"})
    assert r.status_code == 422
    [problem] = r.json()["detail"]
    assert problem["field"] == "target_conversions"
    assert "exactly one of target_conversions and target_value" in problem["reason"]


async def test_forecast_weighs_open_entries_by_stage_probability(api, sessions):  # noqa: F811
    now = int(datetime.now(UTC).timestamp())
    funnel_id = (
        await api.post("/v1/funnels/from-template", json={"template": "b2b_pipeline"})
    ).json()["id"]
    await drain(
        sessions,
        [
            canonical("acme", "lead_created", now - 3600, deal_value=10_000),
            canonical("beta", "lead_created", now - 3600, deal_value=20_000),
            canonical("beta", "lead_qualified", now - 1800),
            canonical("beta", "solution_approved", now - 900),
        ],
    )
    body = (await api.get(f"/v1/funnels/{funnel_id}/forecast")).json()
    assert body["weighted_value"] == pytest.approx(10_000 * 0.10 + 20_000 * 0.50)
    assert body["open_entries"] == 2


async def test_forecast_measures_win_rates_from_closed_entries(api, sessions):  # noqa: F811
    """Without defined probabilities, a stage's is the share of closed entries that got past
    it and reached the last step; an open entry's value is its latest numeric one."""
    steps = [{"event": "a"}, {"event": "b"}, {"event": "c"}]
    funnel = {"name": "m", "steps": steps, "window_seconds": 3600, "value_property": "amount"}
    funnel_id = (await api.post("/v1/funnels", json=funnel)).json()["id"]
    now = int(datetime.now(UTC).timestamp())
    closed = [("x", "abc"), ("y", "ab"), ("z", "a")]
    events = [
        canonical(p, name, T0 + i, amount=10) for p, names in closed for i, name in enumerate(names)
    ]
    events += [
        canonical("w", "a", now - 60, amount=100),
        canonical("v", "a", now - 60, amount=50),
        canonical("v", "b", now - 30, amount=70),
        canonical("v", "b", now - 20, amount="n/a"),  # not a step: b was taken already
    ]
    await drain(sessions, events)
    params = {"from": "2026-01-01"}
    body = (await api.get(f"/v1/funnels/{funnel_id}/forecast", params=params)).json()
    stages = [
        (s["open_entries"], s["value"], s["win_probability"], s["probability_source"])
        for s in body["stages"]
    ]
    assert stages == [(1, 100.0, pytest.approx(1 / 3), "measured"), (1, 70.0, 0.5, "measured")]
    assert body["weighted_value"] == pytest.approx(100 / 3 + 35)
    assert (body["open_entries"], body["open_value"]) == (2, 170.0)


async def test_trends_mark_cohorts_whose_window_is_open(api, sessions):  # noqa: F811
    funnel = {"name": "f", "steps": [{"event": "a"}, {"event": "b"}], "window_seconds": DAY}
    funnel_id = (await api.post("/v1/funnels", json=funnel)).json()["id"]
    now = int(datetime.now(UTC).timestamp())
    await drain(
        sessions,
        [canonical("old", "a", T0), canonical("old", "b", T0 + 5), canonical("new", "a", now - 60)],
    )
    params = {"from": "2026-01-01", "to": datetime.now(UTC).isoformat(), "interval": "month"}
    cohorts = (await api.get(f"/v1/funnels/{funnel_id}/trends", params=params)).json()["cohorts"]
    assert (cohorts[0]["persons"], cohorts[0]["complete"]) == ([1, 1], True)
    assert (cohorts[-1]["persons"], cohorts[-1]["complete"]) == ([1, 0], False)


async def test_diagnosis_names_the_bottleneck_and_groups(api, sessions):  # noqa: F811
    funnel = {
        "name": "f",
        "steps": [
            {"event": "a"},
            {"event": "b", "target_rate": 0.5},
            {"event": "c", "target_rate": 0.9},
        ],
        "breakdowns": ["ch"],
    }
    funnel_id = (await api.post("/v1/funnels", json=funnel)).json()["id"]
    batch = []
    for i in range(10):
        ch = "ads" if i < 5 else "mail"
        batch.append(canonical(f"p{i}", "a", T0, ch=ch))
        if i < 8:
            batch.append(canonical(f"p{i}", "b", T0 + 1))
        if i < 2:
            batch.append(canonical(f"p{i}", "c", T0 + 2))
    await drain(sessions, batch)
    body = (
        await api.get(
            f"/v1/funnels/{funnel_id}/diagnosis", params={"from": "2026-01-01", "to": "2026-01-02"}
        )
    ).json()
    assert body["bottleneck"]["step"] == 3
    assert body["bottleneck"]["gap_to_target"] == pytest.approx(0.9 - 0.25)
    assert [t["step"] for t in body["by_loss"]] == [3, 2]
    assert (body["best_group"]["value"], body["worst_group"]["value"]) == ("ads", "mail")


async def test_chart_is_an_svg_with_a_bar_per_step(api, sessions):  # noqa: F811
    funnel = {"name": "Sign <up>", "steps": [{"event": "a"}, {"event": "b"}]}
    funnel_id = (await api.post("/v1/funnels", json=funnel)).json()["id"]
    await drain(
        sessions, [canonical("p", "a", T0), canonical("q", "a", T0), canonical("p", "b", T0 + 1)]
    )
    r = await api.get(
        f"/v1/funnels/{funnel_id}/chart.svg", params={"from": "2026-01-01", "to": "2026-01-02"}
    )
    assert r.headers["content-type"] == "image/svg+xml"
    svg = ET.fromstring(r.text)
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert "Sign <up>" in texts
    assert {"2", "1"} <= set(texts)
    rects = [r.get("fill") for r in svg.iter("{http://www.w3.org/2000/svg}rect")]
    bars = [fill for fill in rects if fill not in ("#ffffff", TRACK)]  # not background, tracks
    assert len(bars) == 2


async def test_a_funnel_made_from_a_template_can_be_patched(api):  # noqa: F811
    created = (await api.post("/v1/funnels/from-template", json={"template": "ecommerce"})).json()
    assert created["template"] == "ecommerce"
    patched = await api.patch(f"/v1/funnels/{created['id']}", json={"window_seconds": 3600})
    assert patched.status_code == 200, patched.text
    assert patched.json()["window_seconds"] == 3600
    rules = {r["name"]: r["created_at_us"] for r in patched.json()["remarketing"]}
    assert rules == {r["name"]: r["created_at_us"] for r in created["remarketing"]}


async def test_prometheus_gauges_show_persons_per_step_without_scanning_on_scrape(api, sessions):  # noqa: F811
    from services.api.metrics import refresh_gauges

    funnel = {"name": "gauged", "steps": [{"event": "a"}, {"event": "b"}], "window_seconds": 3600}
    funnel_id = (await api.post("/v1/funnels", json=funnel)).json()["id"]
    now = int(datetime.now(UTC).timestamp())
    await drain(
        sessions,
        [
            canonical("p", "a", now - 60),
            canonical("p", "b", now - 30),
            canonical("q", "a", now - 10),
        ],
    )
    await refresh_gauges(sessions, range_days=7)
    gauges = step_gauges((await api.get("/metrics")).text)
    assert gauges["funnel_step_persons", funnel_id, "1"][0] == 2
    assert gauges["funnel_step_persons", funnel_id, "2"][0] == 1
    assert gauges["funnel_step_conversion_ratio", funnel_id, "2"][0] == 0.5
    assert gauges["funnel_step_in_progress", funnel_id, "1"][0] == 1


async def test_gauges_are_recomputed_only_when_their_funnel_changed(api, sessions):  # noqa: F811
    """Kept values are reused while exact (nothing stored changed, no window closed), and
    recomputed after the aggregator changed the funnel's progress."""
    from services.api.metrics import Kept, refresh_gauges

    funnel = {"name": "kept", "steps": [{"event": "a"}, {"event": "b"}], "window_seconds": 3600}
    funnel_id = (await api.post("/v1/funnels", json=funnel)).json()["id"]
    now = int(datetime.now(UTC).timestamp())
    await drain(sessions, [canonical("p", "a", now - 60)])
    kept: dict[str, Kept] = {}
    await refresh_gauges(sessions, range_days=7, kept=kept)
    first = kept[funnel_id]
    assert [s[1:] for s in first.steps] == [(1, 1), (0, 0)]
    await refresh_gauges(sessions, range_days=7, kept=kept)
    assert kept[funnel_id] is first  # unchanged: not computed again
    await drain(sessions, [canonical("p", "b", now - 30)])
    await refresh_gauges(sessions, range_days=7, kept=kept)
    assert [s[1:] for s in kept[funnel_id].steps] == [(1, 0), (1, 0)]
    gauges = step_gauges((await api.get("/metrics")).text)
    assert gauges["funnel_step_persons", funnel_id, "2"][0] == 1
    await api.delete(f"/v1/funnels/{funnel_id}")
    await refresh_gauges(sessions, range_days=7, kept=kept)
    assert funnel_id not in kept
    assert step_gauges((await api.get("/metrics")).text) == {}
