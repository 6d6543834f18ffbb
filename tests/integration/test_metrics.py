"""The API's /metrics against real databases: each funnel step gauge equals the report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from services.api.metrics import refresh_gauges
from tests.helpers import canonical
from tests.integration.test_query_api import api, drain, keys  # noqa: F401 - fixtures

GAUGES = ("funnel_step_persons", "funnel_step_in_progress", "funnel_step_conversion_ratio")
HOUR, DAY = 3600, 86_400


def step_gauges(text: str) -> dict[tuple[str, str, str], tuple[float, dict[str, str]]]:
    """(gauge, funnel id, step position) -> (value, all labels) of a /metrics answer."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in GAUGES:
                key = (sample.name, sample.labels["funnel_id"], sample.labels["step"])
                assert key not in found, f"two series for {key}"
                found[key] = (sample.value, sample.labels)
    return found


def page(person: str, path: str, at_s: float):
    return canonical(person, "page_view", at_s, event_id=f"{person}-{path}-{at_s}", path=path)


def on(path: str) -> dict:
    return {"event": "page_view", "where": [{"property": "path", "value": path}]}


async def test_each_step_gauge_equals_the_report_when_steps_share_an_event_and_funnels_a_name(
    api,  # noqa: F811
    sessions,
):
    pricing_to_order = {
        "name": "growth",
        "steps": [on("/pricing"), on("/signup"), {"event": "order"}],
        "window_seconds": DAY,
    }
    signup_to_order = {"name": "growth", "steps": [on("/signup"), {"event": "order"}]}
    ids = [
        (await api.post("/v1/funnels", json=f)).json()["id"]
        for f in (pricing_to_order, signup_to_order)
    ]
    now = datetime.now(UTC).timestamp()
    old, recent = now - 3 * DAY, now - 2 * HOUR
    batch = []
    for i in range(6):  # closed windows: 6 on pricing, 6 on signup, 3 ordered
        batch += [page(f"p{i}", "/pricing", old), page(f"p{i}", "/signup", old + HOUR)]
        batch += [canonical(f"p{i}", "order", old + 2 * HOUR)] if i < 3 else []
    for i in range(6, 10):  # windows still open: 4 on pricing, 2 of them on signup
        batch += [page(f"p{i}", "/pricing", recent)]
        batch += [page(f"p{i}", "/signup", recent + HOUR)] if i < 8 else []
    batch += [page("q", "/signup", now - 5 * DAY), page("r", "/about", now - DAY)]
    await drain(sessions, batch)

    await refresh_gauges(sessions, range_days=7)
    scraped = await api.get("/metrics")
    assert scraped.status_code == 200
    gauges = step_gauges(scraped.text)
    since = (datetime.now(UTC) - timedelta(days=7)).isoformat()
    persons = {}
    for funnel_id in ids:
        report = (await api.get(f"/v1/funnels/{funnel_id}/report", params={"from": since})).json()
        persons[funnel_id] = [s["persons"] for s in report["steps"]]
        for position, step in enumerate(report["steps"], 1):
            expected = {
                "funnel_step_persons": step["persons"],
                "funnel_step_in_progress": step["in_progress"],
                "funnel_step_conversion_ratio": step["conversion_from_start"] or 0,
            }
            for gauge, value in expected.items():
                got, labels = gauges.pop((gauge, funnel_id, str(position)))
                assert got == value, f"{gauge} of {funnel_id} step {position}"
                assert labels == {
                    "project": "proj",
                    "funnel_id": funnel_id,
                    "step": str(position),
                    "funnel_name": "growth",
                    "step_name": step["name"],
                }
    assert gauges == {}, "series for no step of a report"
    # The report's own numbers: a collision of either kind would have shown.
    assert persons == {ids[0]: [10, 8, 3], ids[1]: [9, 3]}
