"""Segment's analytics.js in a real browser (Debian's chromium, headless, driven by
playwright-core) against the real stack: ingest, broker, aggregator, API.

The SDK is the npm package from tests/browser/node_modules, bundled locally; the pages are
served from 127.0.0.1 and nothing comes from a CDN. Most scenarios talk to ingest through a
proxy (tests/proxy.py) that logs every request and can inject a 503.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jsonschema
import orjson
import pytest
from sqlalchemy import select

from shared.db import create_engine, sessionmaker
from shared.tables import events
from tests.browser_pages import Site, as_pasted, drive, install, readme_snippet
from tests.proxy import Proxy
from tests.stack import eventually

EVENTS_PER_RUN = 5  # alias, identify, page, track, group
STANDARD = {"strategy": "standard", "config": {"keepalive": True}}
BATCHING = {"strategy": "batching", "config": {"size": 3, "timeout": 1000}}
RUNS = {  # person: (delivery, POSTs the proxy fails first)
    "std": (STANDARD, 0),
    "batch": (BATCHING, 0),
    "std-retry": (STANDARD, 1),
    "batch-retry": (BATCHING, 1),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    install()
    running = Site(tmp_path_factory.mktemp("site"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def ingest_host(stack) -> str:
    return f"127.0.0.1:{stack.ports['ingest']}"


@pytest.fixture(scope="module")
def proxy(ingest_host):
    running = Proxy(f"http://{ingest_host}").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def funnel_id(stack) -> str:
    with stack.api() as api:
        created = api.post(
            "/v1/funnels",
            json={"name": "browser", "steps": [{"event": "page_view"}, {"event": "Signed Up"}]},
        )
        assert created.status_code == 201, created.text
        return str(created.json()["id"])


@pytest.fixture(scope="module")
def runs(stack, site, proxy, funnel_id) -> dict[str, Any]:
    """analytics.js in standard and batching mode, each with and without an injected 503."""
    done: dict[str, Any] = {}
    for person, (delivery, failures) in RUNS.items():
        before = len(proxy.log)
        proxy.fail_posts = failures
        started = time.monotonic()
        out = drive(
            scenario="sdk",
            page=f"{site.url}/page/npm.html",
            writeKey=stack.keys["write"],
            apiHost=f"{proxy.host}/v1",
            log=f"http://{proxy.host}/__log",
            logFrom=before,
            person=person,
            delivery=delivery,
        )
        done[person] = {
            **out,
            "proxied": proxy.log[before:],
            "wall_s": time.monotonic() - started,
        }
    return done


def stored(stack, persons: list[str]) -> list[Any]:
    """The stored events of these persons (user or anonymous ids), as rows."""

    async def read() -> list[Any]:
        engine = create_engine(stack.database_url)
        try:
            async with sessionmaker(engine)() as session:
                rows = await session.execute(
                    select(events).where(
                        events.c.user_id.in_(persons) | events.c.person_id.in_(persons)
                    )
                )
                return list(rows)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def stored_names(stack, persons: list[str], n: int) -> Counter[tuple[str, str]]:
    rows = eventually(
        lambda: stored(stack, persons), lambda r: len(r) >= n, timeout_s=90, what="stored events"
    )
    return Counter((r.user_id or r.person_id, r.name) for r in rows)


def report(stack, funnel_id: str, count: str) -> list[int]:
    today = datetime.now(UTC).date()
    params = {"from": str(today - timedelta(days=1)), "to": str(today + timedelta(days=2))}
    with stack.api() as api:
        body = api.get(f"/v1/funnels/{funnel_id}/report", params={**params, "count": count})
        return [s["persons"] for s in body.json()["steps"]]  # entries, when counting totals


def test_analytics_js_in_every_mode_is_counted_exactly_once_in_a_funnel_report(
    stack, runs, funnel_id
):
    persons = list(RUNS)
    names = stored_names(stack, persons, 4 * EVENTS_PER_RUN)
    for person in persons:
        kinds = ("alias", "identify", "page_view", "Signed Up", "group")
        assert [names[(person, name)] for name in kinds] == [1] * len(kinds), names
    counts = eventually(
        lambda: (report(stack, funnel_id, "uniques"), report(stack, funnel_id, "totals")),
        lambda c: c[0] == [4, 4],
        timeout_s=60,
        what="persons per step",
    )
    assert counts == ([4, 4], [4, 4])


def test_a_request_that_got_a_503_is_retried_with_x_retry_count_allowed_by_cors(runs):
    for person in ("std-retry", "batch-retry"):
        proxied = runs[person]["proxied"]
        failed = [r for r in proxied if r.get("injected")]
        assert len(failed) == 1
        retried = [
            r for r in proxied if r["method"] == "POST" and r["headers"].get("x-retry-count") == "1"
        ]
        assert [r["status"] for r in retried] == [200], proxied
        assert _messages(retried[0]) >= _messages(failed[0])
        preflights = [r for r in proxied if r["method"] == "OPTIONS"]
        asked = [
            r
            for r in preflights
            if "x-retry-count" in r["headers"].get("access-control-request-headers", "")
        ]
        assert asked, "the retry was preflighted with X-Retry-Count"
        assert {r["status"] for r in asked} == {200}


def _messages(request: dict[str, Any]) -> set[str]:
    body = orjson.loads(request["body"])
    return {m["messageId"] for m in body.get("batch", [body])}


def test_analytics_js_uses_the_short_paths_and_the_batch_path(runs):
    posted = {r["path"] for r in runs["std"]["proxied"] if r["method"] == "POST"}
    assert posted == {"/v1/i", "/v1/p", "/v1/t", "/v1/g", "/v1/a"}
    batched = {r["path"] for r in runs["batch"]["proxied"] if r["method"] == "POST"}
    assert batched == {"/v1/b"}


def test_identify_group_and_alias_keep_every_id_and_trait_in_the_stored_events(stack, runs):
    anonymous = runs["std"]["result"]["anonymousId"]
    rows = eventually(
        lambda: stored(stack, ["std"]),
        lambda r: len(r) >= EVENTS_PER_RUN,
        timeout_s=90,
        what="stored events",
    )
    by_name = {r.name: r for r in rows}
    identify, group, alias = by_name["identify"], by_name["group"], by_name["alias"]
    assert (identify.user_id, identify.anonymous_id) == ("std", anonymous)
    assert identify.properties == {"email": "std@example.com", "plan": "pro"}
    assert (group.user_id, group.anonymous_id) == ("std", anonymous)
    assert group.properties == {"name": "Acme", "employees": 50, "group_id": "std-team"}
    assert (alias.user_id, alias.anonymous_id) == ("std", anonymous)
    assert alias.properties == {"previous_id": anonymous}
    page = by_name["page_view"]
    assert (page.user_id, page.anonymous_id) == ("std", anonymous)
    assert page.properties["name"] == "Pricing"
    assert page.properties["category"] == "Docs"
    assert page.context["library"]["name"] == "analytics.js"


def test_the_bodies_analytics_js_sends_are_accepted_by_the_documented_schemas(runs, ingest_host):
    doc = httpx.get(f"http://{ingest_host}/openapi.json").json()
    sent = [r for run in runs.values() for r in run["proxied"] if r["method"] == "POST"]
    assert len(sent) >= 4 * 2
    for request in sent:
        operation = doc["paths"][request["path"]]["post"]
        schema = operation["requestBody"]["content"]["text/plain"]["schema"]
        resolver = {**schema, "components": doc["components"]}
        jsonschema.validate(orjson.loads(request["body"]), resolver)


def test_events_still_buffered_when_the_page_is_left_are_sent_with_keepalive(stack, site, proxy):
    before = len(proxy.log)
    out = drive(
        scenario="unload",
        page=f"{site.url}/page/npm.html",
        blank=f"{site.url}/page/blank.html",
        writeKey=stack.keys["write"],
        apiHost=f"{proxy.host}/v1",
        log=f"http://{proxy.host}/__log",
        logFrom=before,
        person="leaver",
    )
    assert out["result"]["sentBeforeUnload"] == 0
    [sent] = [r for r in proxy.log[before:] if r["method"] == "POST"]
    assert (sent["path"], sent["status"], len(orjson.loads(sent["body"])["batch"])) == (
        "/v1/b",
        200,
        3,
    )
    names = stored_names(stack, ["leaver"], 3)
    assert names == Counter(
        {("leaver", "identify"): 1, ("leaver", "Signed Up"): 1, ("leaver", "Left"): 1}
    )


def test_fetch_with_json_and_authorization_and_send_beacon_with_text_plain(stack, site):
    out = drive(
        scenario="raw",
        blank=f"{site.url}/page/blank.html",
        writeKey=stack.keys["write"],
        ingest=f"127.0.0.1:{stack.ports['ingest']}",
        person="beacon",
    )
    result = out["result"]
    assert (result["fetchStatus"], result["fetchBody"]["event_ids"]) == (202, ["beacon-fetch"])
    assert (result["beaconQueued"], result["segmentBeaconQueued"]) == (True, True)
    beacons = [r for r in out["requests"] if "authorization" not in r["headers"]]
    assert {r["headers"]["content-type"] for r in beacons} == {"text/plain;charset=UTF-8"}
    names = stored_names(stack, ["beacon"], 3)
    assert set(names) == {
        ("beacon", "fetched"),
        ("beacon", "beaconed"),
        ("beacon", "beaconed-segment"),
    }


@pytest.mark.parametrize("form", ["npm", "html"])
def test_the_readme_snippets_work_as_pasted(stack, site, form):
    person_events = 2  # the snippet's page(), and a track
    key, ingest = stack.keys["write"], f"127.0.0.1:{stack.ports['ingest']}"
    code = as_pasted(readme_snippet(form), key, ingest)
    if form == "npm":
        page = site.add_bundle_page("readme-npm", code)
    else:
        page = site.add_snippet_page("readme-html", code)
    out = drive(scenario="snippet", page=page, addTrack=form == "html")
    sent = [r for r in out["requests"] if r["status"] == 200]
    assert len(sent) == person_events, out["requests"]
    anonymous = {orjson.loads(r["body"])["anonymousId"] for r in sent}
    names = stored_names(stack, list(anonymous), person_events)
    assert sorted(name for _, name in names) == ["Signed Up", "page_view"]
