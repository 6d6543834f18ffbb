"""Share links: a funnel's chart without any header, fixed to the link's range and count,
until the link expires or is revoked; and the chart itself (zero counts, long names, value)."""

# ruff: noqa: F811 - the fixtures imported from test_query_api are the tests' arguments
from __future__ import annotations

import xml.etree.ElementTree as ET

import httpx
import pytest
from sqlalchemy import update

from services.api.chart import TRACK
from shared.clock import now_us
from shared.tables import share_links
from tests.helpers import canonical
from tests.integration.test_query_api import T0, api, drain, keys  # noqa: F401 - fixtures

SVG = "{http://www.w3.org/2000/svg}"
JANUARY = {"from": "2026-01-01", "to": "2026-02-01"}
FUNNEL = {
    "name": "checkout",
    "steps": [{"event": "visit"}, {"event": "signup"}, {"event": "pay"}],
    "value_property": "amount",
}


def refused(r, status: int, field: str) -> str:
    assert r.status_code == status, r.text
    [problem] = r.json()["detail"]
    assert problem["field"] == field, problem
    return problem["reason"]


def texts(svg: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in svg.iter(f"{SVG}text")]


def bars(svg: ET.Element) -> list[ET.Element]:
    """The filled bars: not the background, not the tracks behind them."""
    return [r for r in svg.iter(f"{SVG}rect") if r.get("fill") not in ("#ffffff", TRACK)]


async def _funnel(api, sessions, funnel=FUNNEL) -> str:
    funnel_id = (await api.post("/v1/funnels", json=funnel)).json()["id"]
    await drain(
        sessions,
        [
            canonical("p", "visit", T0),
            canonical("p", "signup", T0 + 60),
            canonical("p", "pay", T0 + 120, amount=30),
            canonical("q", "visit", T0 + 5),
            canonical("q", "signup", T0 + 65),
            canonical("q", "pay", T0 + 125, amount=12.5),
            canonical("r", "visit", T0 + 10),
        ],
    )
    return funnel_id


async def _link(api, **body) -> dict:
    r = await api.post("/v1/share-links", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def _public(api, path: str) -> httpx.Response:
    """GET without the client's Authorization header, as an <img src> would."""
    transport = api._transport
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as anonymous:
        return await anonymous.get(path)


async def test_a_share_link_serves_its_chart_without_any_header(api, sessions):
    funnel_id = await _funnel(api, sessions)
    link = await _link(api, funnel_id=funnel_id, name="wiki", **JANUARY)
    assert link["token"].startswith("sl_")
    assert link["path"] == f"/v1/shared/{link['token']}/chart.svg"
    assert link["url"] == "http://api" + link["path"]
    assert (link["from"], link["to"], link["last_days"]) == (
        "2026-01-01T00:00:00.000000Z",
        "2026-02-01T00:00:00.000000Z",
        None,
    )
    r = await _public(api, link["path"])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/svg+xml"
    assert r.headers["cache-control"] == "max-age=60"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    svg = ET.fromstring(r.text)
    shown = texts(svg)
    assert "checkout" in shown
    assert {"3", "2"} <= set(shown)
    assert "66.7 % overall" in shown
    assert "amount: 42.50 (average 21.25)" in shown  # the value of the converted entries


async def test_a_share_link_keeps_its_range_and_count(api, sessions):
    funnel_id = await _funnel(api, sessions)
    february = await _link(api, funnel_id=funnel_id, **{"from": "2026-02-01", "to": "2026-03-01"})
    totals = await _link(api, funnel_id=funnel_id, count="totals", **JANUARY)
    recent = await _link(api, funnel_id=funnel_id, last_days=7)  # 2026-01-01 is long ago
    for link, first in ((february, "0"), (totals, "3"), (recent, "0")):
        svg = ET.fromstring((await _public(api, link["path"])).text)
        assert texts(svg)[texts(svg).index("1. visit") + 2] == first, texts(svg)
    assert "totals" in "".join(texts(ET.fromstring((await _public(api, totals["path"])).text)))
    assert (recent["last_days"], recent["from"], recent["to"]) == (7, None, None)
    default = await _link(api, funnel_id=funnel_id)
    assert default["last_days"] == 30  # API_DEFAULT_RANGE_DAYS, kept with the link


async def test_wrong_revoked_and_expired_links_are_refused_naming_the_token(api, sessions):
    funnel_id = await _funnel(api, sessions)
    revoked, expired = [await _link(api, funnel_id=funnel_id, **JANUARY) for _ in range(2)]
    token = revoked["token"]
    for wrong in (token[:-1] + ("A" if token[-1] != "A" else "B"), "sl_nope", "nope", "a%00b"):
        r = await _public(api, f"/v1/shared/{wrong}/chart.svg")
        assert refused(r, 404, "token") == "no such share link"
    r = await api.delete(f"/v1/share-links/{revoked['id']}")
    assert r.status_code == 200
    assert (r.json()["revoked_at"] is not None, r.json()["active"]) == (True, False)
    assert "revoked" in refused(await _public(api, revoked["path"]), 410, "token")
    async with sessions.begin() as session:  # the link's time has come
        await session.execute(
            update(share_links)
            .where(share_links.c.id == expired["id"])
            .values(expires_at_us=now_us() - 1)
        )
    assert "expired" in refused(await _public(api, expired["path"]), 410, "token")
    listed = {x["id"]: x for x in (await api.get("/v1/share-links")).json()["share_links"]}
    assert {k: listed[k]["active"] for k in listed} == {revoked["id"]: False, expired["id"]: False}
    assert revoked["token"] not in str(listed)
    assert "token" not in listed[revoked["id"]]


async def test_links_are_the_project_admins_to_make_list_and_revoke(api, sessions, keys):
    funnel_id = await _funnel(api, sessions)
    link = await _link(api, funnel_id=funnel_id, expires_in_seconds=3600)
    read = {"Authorization": f"Bearer {keys['read']}"}
    for r in (
        await api.post("/v1/share-links", json={"funnel_id": funnel_id}, headers=read),
        await api.get("/v1/share-links", headers=read),
        await api.delete(f"/v1/share-links/{link['id']}", headers=read),
    ):
        assert refused(r, 403, "authorization") == "this needs an admin key"
    only = await api.get("/v1/share-links", params={"funnel_id": "a\u0000b"})
    assert only.json()["share_links"] == []
    r = await api.post("/v1/share-links", json={"funnel_id": "nope"})
    assert refused(r, 422, "funnel_id") == "no funnel 'nope' in this project"
    assert refused(await api.delete("/v1/share-links/nope"), 404, "link_id")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"last_days": 7, "from": "2026-01-01"}, 422, "last_days"),
        ({"to": "2026-01-01"}, 422, "to"),
        ({"last_days": 0}, 422, "last_days"),
        ({"last_days": 3654}, 422, "last_days"),
        ({"from": "yesterday"}, 400, "from"),
        ({"from": "2026-02-01", "to": "2026-01-01"}, 400, "from"),
        ({"expires_in_seconds": 59}, 422, "expires_in_seconds"),
        ({"expires_in_seconds": 367 * 86_400}, 422, "expires_in_seconds"),
        ({"count": "people"}, 422, "count"),
        ({"breakdown": "channel"}, 422, "breakdown"),
    ],
)
async def test_bad_share_links_are_refused_naming_the_field(api, sessions, body, status, field):
    funnel_id = (await api.post("/v1/funnels", json=FUNNEL)).json()["id"]
    r = await api.post("/v1/share-links", json={"funnel_id": funnel_id, **body})
    assert r.status_code == status, r.text
    assert field in [p["field"] for p in r.json()["detail"]]


async def test_the_chart_draws_no_bar_for_zero_and_wraps_long_names(api, sessions):
    long_name = "Completed the checkout form after reading every single term and condition"
    funnel = {
        **FUNNEL,
        "steps": [
            {"event": "visit"},
            {"event": "signup", "name": long_name},
            {"event": "pay"},
            {"event": "refer", "name": '<refer> & "share"'},
        ],
    }
    funnel_id = await _funnel(api, sessions, funnel)
    r = await api.get(f"/v1/funnels/{funnel_id}/chart.svg", params=JANUARY)
    assert r.status_code == 200, r.text
    svg = ET.fromstring(r.text)
    assert len(bars(svg)) == 3  # visit, signup and pay; nobody referred
    shown = texts(svg)
    assert "0" in shown
    assert '4. <refer> & "share"' in shown
    titles = ["".join(t.itertext()) for t in svg.iter(f"{SVG}title")]
    assert long_name in titles
    label = next(g for g in svg.iter(f"{SVG}g") if g.findtext(f"{SVG}title") == long_name)
    lines = [t.text for t in label.iter(f"{SVG}text")][:-1]  # the name; then its rates
    assert lines == ["2. Completed the checkout", "form after reading every…"]
    assert "1 dropped (33.3 %)" in shown  # r stopped at visit; windows long closed
    assert "value 42.50" in shown
