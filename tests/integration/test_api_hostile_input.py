"""Hostile input to the query API: each class is refused with a 4xx naming the field, and
nothing of it reaches the database (on PostgreSQL a NUL would fail the query: a 500)."""

from __future__ import annotations

import tracemalloc

import orjson
import pytest

from tests.integration.test_query_api import FUNNEL, api, keys  # noqa: F401 - fixtures


def refused(r, status: int, field: str, reason: str = "") -> None:
    assert r.status_code == status, r.text
    problems = r.json()["detail"]
    assert field in [p["field"] for p in problems], problems
    assert any(reason in p["reason"] for p in problems if p["field"] == field), problems


async def _funnel(api, **extra) -> str:  # noqa: F811
    r = await api.post("/v1/funnels", json={**FUNNEL, **extra})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def raw(body: str) -> dict:
    return {"content": body.encode(), "headers": {"Content-Type": "application/json"}}


@pytest.mark.parametrize(
    ("path", "params", "field", "reason"),
    [
        ("report", {"to": "0001-01-01"}, "to", "between 1970-01-01 and 9999-01-01"),
        ("report", {"to": "9999-12-31T23:00:00-05:00"}, "to", "RFC 3339"),
        ("report", {"from": "0001-01-01"}, "from", "between 1970-01-01"),
        ("report", {"from": "1970-01-01", "to": "2026-01-01"}, "from", "at most 3,653 days"),
        ("trends", {"from": "9998-11-01", "to": "9999-12-31", "interval": "month"}, "to", ""),
        ("trends", {"from": "2016-01-01", "to": "2026-01-01", "interval": "day"}, "interval", ""),
        ("forecast", {"to": "0001-01-01T00:00:00+14:00"}, "to", ""),
        ("diagnosis", {"from": "2026-13-01"}, "from", "RFC 3339"),
        ("chart.svg", {"to": "2026-01-01T00:00:00"}, "to", "needs a UTC offset"),
    ],
)
async def test_dates_at_the_calendars_ends_are_400_naming_from_or_to(
    api,  # noqa: F811
    path,
    params,
    field,
    reason,
):
    funnel_id = await _funnel(api)
    refused(await api.get(f"/v1/funnels/{funnel_id}/{path}", params=params), 400, field, reason)


async def test_trends_over_ten_thousand_years_are_refused_before_any_work(api):  # noqa: F811
    funnel_id = await _funnel(api)
    params = {"from": "0001-01-01", "to": "9998-12-31", "interval": "day"}
    tracemalloc.start()
    try:
        r = await api.get(f"/v1/funnels/{funnel_id}/trends", params=params)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    refused(r, 400, "from")
    assert peak < 2_000_000  # making 3.6 million cohorts took hundreds of MB


async def test_a_plan_over_a_range_of_ten_thousand_years_is_refused(api):  # noqa: F811
    funnel_id = await _funnel(api)
    body = {"target_conversions": 10, "from": "0001-01-01", "to": "9999-01-01"}
    refused(await api.post(f"/v1/funnels/{funnel_id}/plan", json=body), 400, "from")


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/funnels/%00", "funnel_id"),
        ("/v1/funnels/%00/report", "funnel_id"),
        ("/v1/funnels/%00/trends", "funnel_id"),
        ("/v1/funnels/a%01b/chart.svg", "funnel_id"),
        (f"/v1/funnels/{'f' * 101}", "funnel_id"),
        ("/v1/webhooks/%00", "webhook_id"),
        ("/v1/webhooks/%00/deliveries", "webhook_id"),
    ],
)
async def test_control_characters_in_path_ids_are_404_naming_the_id(api, path, field):  # noqa: F811
    refused(await api.get(path), 404, field)


async def test_a_nul_delivery_id_is_404_naming_it(api):  # noqa: F811
    r = await api.post("/v1/webhooks/w/deliveries/%00/replay")
    refused(r, 404, "delivery_id")
    refused(await api.delete("/v1/funnels/%00"), 404, "funnel_id")
    refused(await api.patch("/v1/webhooks/%00", json={"enabled": True}), 404, "webhook_id")


def _where(**condition) -> list:
    return [{"event": "visit", "where": [{"property": "plan", **condition}]}, {"event": "pay"}]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "a\x00b"}, "name"),
        ({"name": "line\nbreak"}, "name"),
        ({"steps": [{"event": "visit", "name": "\x7f"}, {"event": "pay"}]}, "steps.0.name"),
        ({"steps": [{"event": "vi\x00sit"}, {"event": "pay"}]}, "steps.0.event"),
        ({"steps": _where(value="p\x00ro")}, "steps.0.where.0.value"),
        ({"steps": _where(value={"k\x00": 1})}, "steps.0.where.0.value.k\x00"),
        ({"steps": _where(value=["ok", "n\x00"], op="in")}, "steps.0.where.0.value.1"),
        (
            {"steps": [{"event": "visit", "where": [{"property": "p\x1b"}]}, {}]},
            "steps.0.where.0.property",
        ),
        ({"breakdowns": ["chan\x00nel"]}, "breakdowns.0"),
        ({"value_property": "am\x00ount"}, "value_property"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"timezone": "zone1970.tab"}, "timezone"),
        ({"remarketing": [{"name": "r\x00", "after_seconds": 60}]}, "remarketing.0.name"),
    ],
)
async def test_control_characters_in_names_and_values_are_422_naming_the_field(
    api,  # noqa: F811
    change,
    field,
):
    refused(await api.post("/v1/funnels", json={**FUNNEL, **change}), 422, field)
    funnel_id = await _funnel(api)
    refused(await api.patch(f"/v1/funnels/{funnel_id}", json=change), 422, field)
    assert (await api.get("/v1/funnels")).json()["funnels"][0]["name"] == "signup"


def _nested(levels: int) -> object:
    value: object = "deep"
    for _ in range(levels):
        value = [value]
    return value


async def test_lone_surrogates_are_422_naming_the_field(api):  # noqa: F811
    r = await api.post("/v1/funnels", **raw('{"name": "a\\ud800", "steps": [{}, {}]}'))
    refused(r, 422, "name", "lone surrogate")
    r = await api.post("/v1/funnels", **raw('{"\\udfff": 1}'))
    refused(r, 422, "\\udfff", "lone surrogate")


async def test_a_condition_value_nested_300_levels_is_422(api):  # noqa: F811
    body = {**FUNNEL, "steps": _where(value=_nested(300))}
    r = await api.post("/v1/funnels", json=body)
    assert r.status_code == 422
    [problem] = r.json()["detail"]
    assert problem["field"].startswith("steps.0.where.0.value.0.0")
    assert "nests deeper than 32 levels" in problem["reason"]


async def test_a_body_nested_past_the_parsers_limit_is_422(api):  # noqa: F811
    refused(await api.post("/v1/funnels", **raw("[" * 100_000)), 422, "(body)", "nests deeper")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_nan_and_infinity_in_bodies_are_422_naming_the_field(api, literal):  # noqa: F811
    doc = orjson.dumps({**FUNNEL, "steps": _where(value="X")}).decode()
    r = await api.post("/v1/funnels", **raw(doc.replace('"X"', literal)))
    refused(r, 422, "steps.0.where.0.value", "finite number")
    funnel_id = await _funnel(api)
    r = await api.post(
        f"/v1/funnels/{funnel_id}/plan", **raw(f'{{"target_conversions": {literal}}}')
    )
    refused(r, 422, "target_conversions", "finite number")
    assert len((await api.get("/v1/funnels")).json()["funnels"]) == 1


@pytest.mark.parametrize("number", [str(2**63), str(-(2**63) - 1), "9" * 30, "1" * 5000])
async def test_integers_outside_64_bits_are_422_naming_the_field(api, number):  # noqa: F811
    doc = orjson.dumps({**FUNNEL, "steps": _where(value="X")}).decode()
    r = await api.post("/v1/funnels", **raw(doc.replace('"X"', number)))
    refused(r, 422, "steps.0.where.0.value", "signed 64-bit range")
    window = orjson.dumps({**FUNNEL, "window_seconds": "X"}).decode()
    r = await api.post("/v1/funnels", **raw(window.replace('"X"', number)))
    refused(r, 422, "window_seconds")


async def test_the_largest_64_bit_integers_are_kept_exactly(api):  # noqa: F811
    doc = orjson.dumps({**FUNNEL, "steps": _where(value="X", op="lt")}).decode()
    r = await api.post("/v1/funnels", **raw(doc.replace('"X"', str(2**63 - 1))))
    assert r.status_code == 201, r.text
    assert r.json()["steps"][0]["where"][0]["value"] == 2**63 - 1


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://[::1/x", "not a valid URL"),
        ("http://1.1.1.1:99999/", "not a valid URL"),
        ("http://1.1.1.1:port/", "not a valid URL"),
        ("http://exa\x00mple.com/", "NUL character"),
        ("http://exa\x01mple.com/", "control characters"),
        ("ftp://example.com/hook", "http or https"),
    ],
)
async def test_unparsable_webhook_urls_are_422_naming_url(api, url, reason):  # noqa: F811
    body = {"url": url, "event_types": ["remarketing.due"]}
    refused(await api.post("/v1/webhooks", json=body), 422, "url", reason)


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("report", {"step": str(10**30)}, "step"),
        ("report", {"step": "1" * 5000}, "step"),
        ("report", {"step": "-1"}, "step"),
        ("report", {"count": "people"}, "count"),
        ("report", {"attribution": "random"}, "attribution"),
        ("report", {"breakdown": "b" * 201}, "breakdown"),
        ("report", {"breakdown": "chan\x00nel"}, "breakdown"),
        ("report", {"from": "2026-01-01" * 10}, "from"),
        ("report", {"filters": "[{"}, "filters"),
        ("report", {"filters": '{"property": "c"}'}, "filters"),
        ("report", {"filters": '[{"property": "c", "op": "eq"}]'}, "filters.0"),
        ("report", {"filters": '[{"property": "c", "op": "like", "value": 1}]'}, "filters.0.op"),
        ("report", {"filters": r'[{"property": "c\u0000", "value": 1}]'}, "filters.0.property"),
        ("report", {"breakdown": " "}, "breakdown"),
        (
            "report",
            {"filters": '[{"property": "c", "op": "gt", "value": 1e999}]'},
            "filters.0.value",
        ),
        (
            "report",
            {"filters": '[{"property": "c", "op": "in", "value": [NaN]}]'},
            "filters.0.value",
        ),
        ("time-to-convert", {"bins": "0"}, "bins"),
        ("time-to-convert", {"bins": "2.5"}, "bins"),
        ("time-to-convert", {"bins": "10,5"}, "bins"),
        ("time-to-convert", {"bins": "0,nan"}, "bins"),
        ("time-to-convert", {"bins": "a,b"}, "bins"),
        ("time-to-convert", {"to_step": "9"}, "to_step"),
        ("time-to-convert", {"from_step": "2", "to_step": "2"}, "from_step"),
        ("time-to-convert", {"filters": "[1]"}, "filters.0"),
        ("trends", {"interval": "year"}, "interval"),
        ("trends", {"interval": "day\x00"}, "interval"),
    ],
)
async def test_odd_query_parameters_are_4xx_naming_them(api, path, params, field):  # noqa: F811
    funnel_id = await _funnel(api)
    r = await api.get(f"/v1/funnels/{funnel_id}/{path}", params=params)
    assert r.status_code in (400, 422), r.text
    refused(r, r.status_code, field)


async def test_webhook_query_parameters_are_checked(api):  # noqa: F811
    body = {"url": "https://example.com/hook", "event_types": ["remarketing.due"]}
    hook = await api.post("/v1/webhooks", json=body)
    if hook.status_code != 201:  # no resolver here: any id shows the parameter checks
        hook_id = "00000000-0000-0000-0000-000000000000"
    else:
        hook_id = hook.json()["id"]
    for limit in ("0", "501", str(2**64), "ten"):
        r = await api.get(f"/v1/webhooks/{hook_id}/deliveries", params={"limit": limit})
        refused(r, 422, "limit")
    r = await api.post(f"/v1/webhooks/{hook_id}/replay", params={"since": "0001-01-01"})
    assert r.status_code in (400, 404)
    refused(await api.post(f"/v1/webhooks/{hook_id}/replay"), 422, "since")


@pytest.mark.parametrize(
    ("request_options", "reason"),
    [
        ({}, "Field required"),
        ({"content": b"", "headers": {"Content-Type": "application/json"}}, "Field required"),
        ({"content": b'{"name": "x"', "headers": {"Content-Type": "application/json"}}, "JSON"),
        ({"content": orjson.dumps(FUNNEL), "headers": {"Content-Type": "text/plain"}}, "JSON"),
        ({"content": orjson.dumps(FUNNEL)}, "Content-Type: application/json"),
        ({"content": b"[]", "headers": {"Content-Type": "application/json"}}, ""),
        ({"content": b"\xff\xfe{", "headers": {"Content-Type": "application/json"}}, ""),
    ],
)
async def test_empty_bodies_and_wrong_content_types_are_422(api, request_options, reason):  # noqa: F811
    r = await api.post("/v1/funnels", **request_options)
    refused(r, 422, "(body)", reason)


async def test_a_body_over_the_size_limit_is_413(api):  # noqa: F811
    body = orjson.dumps({**FUNNEL, "name": "x" * 2_000_000})
    refused(await api.post("/v1/funnels", **raw(body.decode())), 413, "(body)", "1,000,000 bytes")

    async def chunks():  # no Content-Length: the limit is found while reading
        for i in range(0, len(body), 65_536):
            yield body[i : i + 65_536]

    r = await api.post(
        "/v1/funnels", content=chunks(), headers={"Content-Type": "application/json"}
    )
    refused(r, 413, "(body)")


async def test_a_plan_too_large_to_be_finite_is_422(api):  # noqa: F811
    funnel_id = await _funnel(api)
    body = {"target_conversions": 1e15, "step_rates": [1e-160, 1e-160]}
    refused(await api.post(f"/v1/funnels/{funnel_id}/plan", json=body), 422, "(body)", "finite")


async def test_unknown_paths_and_methods_answer_in_the_error_shape(api):  # noqa: F811
    refused(await api.get("/v1/nothing"), 404, "(path)")
    refused(await api.put("/v1/funnels"), 405, "(method)")
