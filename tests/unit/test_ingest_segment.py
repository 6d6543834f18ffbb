"""The Segment shapes as analytics.js, RudderStack and analytics-python send them."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.ingest_fakes import KEY, FakeKeys, FakePublisher

# What analytics.js (standard mode) posts to /v1/t: text/plain, the key in the body as well.
ANALYTICS_JS_TRACK = {
    "timestamp": "2026-11-30T10:00:00.000Z",
    "integrations": {"Segment.io": True},
    "type": "track",
    "event": "Signed Up",
    "properties": {"plan": "pro"},
    "context": {"page": {"path": "/"}, "library": {"name": "analytics.js"}},
    "messageId": "ajs-next-1",
    "anonymousId": "anon-1",
    "userId": "user-1",
    "writeKey": KEY,
    "sentAt": "2026-11-30T10:00:00.050Z",
    "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
}


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def client(publisher):
    settings = IngestSettings(rate_limit_per_key=0, cors_origins="https://shop.example")
    with TestClient(create_app(settings, publisher=publisher, keys=FakeKeys())) as c:
        yield c


@pytest.mark.parametrize(
    ("path", "body", "name"),
    [
        ("/v1/t", {"event": "Signed Up"}, "Signed Up"),
        ("/v1/p", {"name": "Home"}, "page_view"),
        ("/v1/s", {"name": "Home"}, "screen_view"),
        ("/v1/i", {"traits": {"plan": "pro"}}, "identify"),
        ("/v1/g", {"groupId": "acme"}, "group"),
        ("/v1/a", {"previousId": "anon-0"}, "alias"),
    ],
)
def test_analytics_js_short_paths_are_the_segment_calls(client, publisher, path, body, name):
    message = {**body, "userId": "u", "writeKey": KEY}
    r = client.post(path, content=_text(message), headers={"content-type": "text/plain"})
    assert r.status_code == 200, r.text
    assert [e.event for e in publisher.events()] == [name]


def test_an_analytics_js_body_is_accepted_with_its_key_sent_at_and_metadata(client, publisher):
    r = client.post(
        "/v1/t", content=_text(ANALYTICS_JS_TRACK), headers={"content-type": "text/plain"}
    )
    assert r.status_code == 200
    [event] = publisher.events()
    assert (event.event_id, event.user_id, event.anonymous_id) == ("ajs-next-1", "user-1", "anon-1")
    assert event.properties == {"plan": "pro"}
    assert "_metadata" not in event.context
    assert "skew_corrected" in event.flags


def test_the_batch_path_takes_the_batch_sent_at_for_every_message(client, publisher):
    batch = [{**ANALYTICS_JS_TRACK, "messageId": f"m{i}"} for i in range(3)]
    for message in batch:
        del message["sentAt"]
    body = {"writeKey": KEY, "batch": batch, "sentAt": "2026-11-30T10:00:10Z"}
    r = client.post("/v1/b", content=_text(body), headers={"content-type": "text/plain"})
    assert (r.status_code, r.json()["accepted"]) == (200, 3)
    for event in publisher.events():
        assert (event.received_at - event.timestamp).total_seconds() == pytest.approx(10, abs=1)


def test_identify_keeps_both_ids_and_its_traits_wherever_the_sdk_put_them(client, publisher):
    rudderstack = {
        "userId": "u1",
        "anonymousId": "a1",
        "originalTimestamp": "2026-11-30T09:00:00Z",
        "context": {"traits": {"email": "old@example.com", "plan": "free"}},
        "traits": {"email": "new@example.com"},
    }
    assert client.post("/v1/identify", json=rudderstack, auth=(KEY, "")).status_code == 200
    [event] = publisher.events()
    assert (event.user_id, event.anonymous_id, event.person_id) == ("u1", "a1", "u1")
    assert event.properties == {"email": "new@example.com", "plan": "free"}
    assert event.context["traits"] == {"email": "old@example.com", "plan": "free"}
    assert event.timestamp.isoformat() == "2026-11-30T09:00:00+00:00"


def test_group_and_alias_keep_both_ids_with_group_id_and_previous_id(client, publisher):
    group = {"userId": "u1", "anonymousId": "a1", "groupId": 7, "traits": {"name": "Acme"}}
    alias = {"userId": "u1", "anonymousId": "a1", "previousId": "a1"}
    assert client.post("/v1/group", json=group, auth=(KEY, "")).status_code == 200
    assert client.post("/v1/alias", json=alias, auth=(KEY, "")).status_code == 200
    got = [(e.event, e.user_id, e.anonymous_id, e.properties) for e in publisher.events()]
    assert got == [
        ("group", "u1", "a1", {"name": "Acme", "group_id": "7"}),
        ("alias", "u1", "a1", {"previous_id": "a1"}),
    ]


def test_a_preflight_for_a_retry_with_its_headers_is_allowed(client):
    asked = "authorization,content-type,x-retry-count,x-site-header"
    r = client.options(
        "/v1/t",
        headers={
            "origin": "https://shop.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": asked,
        },
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-headers"] == asked
    assert r.headers["access-control-allow-origin"] == "https://shop.example"


def test_a_429_lets_a_browser_read_its_retry_after(publisher):
    settings = IngestSettings(rate_limit_per_key=1, cors_origins="*")
    with TestClient(create_app(settings, publisher=publisher, keys=FakeKeys())) as c:
        body = {"batch": [{"userId": "u", "event": "a", "type": "track"}] * 2}
        r = c.post("/v1/b", json=body, auth=(KEY, ""), headers={"origin": "https://x.example"})
    assert r.status_code == 429
    assert r.headers["access-control-expose-headers"] == "Retry-After"
    assert int(r.headers["retry-after"]) >= 1


def test_the_snippet_gets_settings_that_point_analytics_js_back_here(client):
    r = client.get(f"/v1/projects/{KEY}/settings")
    assert r.status_code == 200
    segmentio = r.json()["integrations"]["Segment.io"]
    assert segmentio == {"apiKey": KEY, "apiHost": "testserver/v1", "protocol": "http"}
    assert r.json()["metrics"] == {"sampleRate": 0}
    unknown = client.get("/v1/projects/wk_nope/settings")
    assert unknown.status_code == 404
    assert unknown.json()["detail"][0]["field"] == "write_key"


def _text(body: object) -> str:
    return json.dumps(body)
