"""Property-based: whatever query parameters, path ids and bodies a client sends, the query API
answers below 500, and every refusal names a field (real databases, a stored funnel)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.api.app import create_app
from services.api.settings import ApiSettings
from shared.db import create_engine, sessionmaker
from tests.helpers import create_key

EXAMPLES = int(os.environ.get("API_PROPERTY_EXAMPLES", "60"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FUNNEL = {
    "name": "props",
    "steps": [
        {"event": "visit", "where": [{"property": "plan", "value": "pro"}]},
        {"event": "signup"},
        {"event": "pay"},
    ],
    "breakdowns": ["channel"],
    "value_property": "amount",
    "timezone": "Europe/Paris",
}


@dataclass(frozen=True)
class Api:
    http: httpx.AsyncClient
    funnel_id: str


@pytest.fixture
async def api(database_url):  # SQLite, and PostgreSQL, where a NUL in a query is an error
    engine = create_engine(database_url)
    async with sessionmaker(engine).begin() as session:
        key = await create_key(session, "proj", "admin")
    await engine.dispose()
    app = create_app(ApiSettings(database_url=database_url, report_max_stale_s=0))
    async with app.router.lifespan_context(app):
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api", headers=headers
        ) as c:
            yield Api(c, (await c.post("/v1/funnels", json=FUNNEL)).json()["id"])


def answered(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.request.method, r.request.url, r.text)
    if r.status_code >= 400:
        problems = r.json()["detail"]
        assert problems, r.text
        assert all(p["field"] and p["reason"] for p in problems), r.text


# Instants as clients write them, at the calendar's ends too, and anything else.
instants = st.one_of(
    st.dates().map(str),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01", "9999-12-31T23:00:00-05:00", "1970-01-01", "now", ""]),
    st.text(max_size=40),
)
numbers = st.one_of(st.integers().map(str), st.floats().map(str), st.text(max_size=10))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["\x00", "\ud800", "a\nb", "Europe/Paris", "visit"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
ids = st.one_of(st.text(min_size=1, max_size=120), st.sampled_from(["%00", "..", "a/b", " "]))


def _query(draw_from: dict) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({}, optional=draw_from)


REPORT_PARAMS = _query(
    {
        "from": instants,
        "to": instants,
        "count": st.sampled_from(["uniques", "totals"]) | st.text(max_size=8),
        "breakdown": st.sampled_from(["channel", "plan"]) | st.text(max_size=210),
        "attribution": st.sampled_from(["first_touch", "last_touch", "step"]) | st.text(max_size=8),
        "step": numbers,
        "interval": st.sampled_from(["day", "week", "month"]) | st.text(max_size=8),
    }
)


@PROPERTY
@given(
    route=st.sampled_from(["report", "trends", "forecast", "diagnosis", "chart.svg"]),
    params=REPORT_PARAMS,
)
async def test_report_parameters_never_cause_a_server_error(api, route, params):
    answered(await api.http.get(f"/v1/funnels/{api.funnel_id}/{route}", params=params))


@PROPERTY
@given(
    funnel_id=ids,
    route=st.sampled_from(["", "/report", "/trends", "/forecast", "/diagnosis", "/chart.svg"]),
)
async def test_odd_path_ids_never_cause_a_server_error(api, funnel_id, route):
    path = quote(funnel_id, safe="%")
    answered(await api.http.get(f"/v1/funnels/{path}{route}"))
    answered(await api.http.get(f"/v1/webhooks/{path}/deliveries", params={"limit": "5"}))
    answered(await api.http.post(f"/v1/webhooks/{path}/replay", params={"since": "2026-01-01"}))


def _raw(value: object) -> bytes:
    # allow_nan: NaN and Infinity literals as a careless client's serializer writes them.
    return json.dumps(value, allow_nan=True).encode()


FUNNEL_FIELDS = st.sampled_from(
    ["name", "steps", "window_seconds", "order", "count", "exclusions", "breakdowns",
     "value_property", "timezone", "remarketing", "template"]
)  # fmt: skip


@PROPERTY
@given(field=FUNNEL_FIELDS, value=json_values, method=st.sampled_from(["POST", "PUT", "PATCH"]))
async def test_funnel_bodies_never_cause_a_server_error(api, field, value, method):
    url = "/v1/funnels" if method == "POST" else f"/v1/funnels/{api.funnel_id}"
    body = {**FUNNEL, field: value} if method != "PATCH" else {field: value}
    r = await api.http.request(
        method, url, content=_raw(body), headers={"Content-Type": "application/json"}
    )
    answered(r)


@PROPERTY
@given(
    condition=st.fixed_dictionaries(
        {
            "property": json_values,
            "op": st.sampled_from(["eq", "in", "gt", "is_set"]) | json_values,
        },
        optional={"value": json_values},
    ),
    step_field=st.sampled_from(["event", "name", "target_rate", "win_probability", "rate_name"]),
    step_value=json_values,
)
async def test_step_and_condition_values_never_cause_a_server_error(
    api, condition, step_field, step_value
):
    steps = [{"event": "visit", "where": [condition], step_field: step_value}, {"event": "pay"}]
    body = _raw({**FUNNEL, "steps": steps})
    r = await api.http.post(
        "/v1/funnels", content=body, headers={"Content-Type": "application/json"}
    )
    answered(r)


@PROPERTY
@given(
    plan=st.dictionaries(
        st.sampled_from(
            ["period", "target_conversions", "target_value", "average_value", "overall_rate",
             "step_rates", "from", "to"]
        ),
        json_values | instants,
        max_size=5,
    ),
    webhook=st.dictionaries(
        st.sampled_from(["url", "event_types", "funnel_id", "enabled"]),
        json_values | st.sampled_from(["http://[::1/x", "http://1.1.1.1:99999/", "http://127.0.0.1/"]),
        max_size=4,
    ),
)  # fmt: skip
async def test_plan_and_webhook_bodies_never_cause_a_server_error(api, plan, webhook):
    headers = {"Content-Type": "application/json"}
    answered(
        await api.http.post(
            f"/v1/funnels/{api.funnel_id}/plan", content=_raw(plan), headers=headers
        )
    )
    answered(await api.http.post("/v1/webhooks", content=_raw(webhook), headers=headers))


@PROPERTY
@given(
    body=st.binary(max_size=200) | json_values.map(_raw),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "", "application/x-www-form-urlencoded"]
    ),
)  # fmt: skip
async def test_any_bytes_as_a_body_never_cause_a_server_error(api, body, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    answered(await api.http.post("/v1/funnels", content=body, headers=headers))
    answered(await api.http.patch(f"/v1/funnels/{api.funnel_id}", content=body, headers=headers))
