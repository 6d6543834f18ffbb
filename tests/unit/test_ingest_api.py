"""Ingest's HTTP contract against fakes: validation, auth, limits, durability answers."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.app import create_app
from services.ingest.publisher import Overloaded, Unavailable
from services.ingest.settings import IngestSettings
from shared.events import REJECTED_TOPIC
from tests.ingest_fakes import KEY, FakeKeys, FakePublisher


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def client(publisher):
    app = create_app(IngestSettings(rate_limit_per_key=0), publisher=publisher, keys=FakeKeys())
    with TestClient(app) as c:
        c.auth = (KEY, "")
        yield c


def test_single_event_is_published_with_project_and_person_key(client, publisher):
    r = client.post("/v1/events", json={"user_id": "u1", "event": "visit", "properties": {"a": 1}})
    assert r.status_code == 202
    [event] = publisher.events()
    assert r.json()["event_ids"] == [event.event_id]
    assert (event.project_id, event.person_id, event.event) == ("proj", "u1", "visit")
    assert publisher.records[0].key == b"proj/u1"
    assert dict(publisher.records[0].headers) == {"schema-version": b"1"}


def test_batch_reports_each_invalid_event_with_index_and_field(client, publisher):
    batch = [
        {"user_id": "u1", "event": "a"},
        {"user_id": "u1"},
        {"anonymous_id": "x", "event": "b", "timestamp": "yesterday"},
    ]
    r = client.post("/v1/events", json={"batch": batch})
    assert r.status_code == 202
    body = r.json()
    assert body["accepted"] == 1
    assert [(p["index"], p["field"]) for p in body["rejected"]] == [(1, "event"), (2, "timestamp")]
    rejected = [json.loads(r.value) for r in publisher.records if r.topic == REJECTED_TOPIC]
    assert [d["errors"][0]["field"] for d in rejected] == ["event", "timestamp"]


def test_a_batch_with_no_valid_event_is_400(client):
    r = client.post("/v1/events", json={"batch": [{"event": "a"}]})
    assert r.status_code == 400
    assert r.json()["detail"][0]["reason"] == "user_id or anonymous_id is required"


def test_missing_or_unknown_write_key_is_401(client):
    assert client.post("/v1/events", json={}, auth=None).status_code == 401
    r = client.post("/v1/events", json={"user_id": "u", "event": "a"}, auth=("nope", ""))
    assert r.status_code == 401
    assert r.json() == {
        "detail": [{"field": "authorization", "reason": "unknown or revoked write key"}]
    }


def test_malformed_json_is_400_and_other_media_is_415(client):
    r = client.post("/v1/events", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["detail"][0]["field"] == "body"
    r = client.post("/v1/events", content=b"<a/>", headers={"content-type": "application/xml"})
    assert r.status_code == 415
    assert r.json()["detail"][0]["field"] == "content-type"


def test_text_plain_bodies_are_accepted_for_send_beacon(client, publisher):
    body = json.dumps({"anonymous_id": "a1", "event": "visit"})
    r = client.post("/v1/events", content=body, headers={"content-type": "text/plain"})
    assert r.status_code == 202
    assert publisher.events()[0].person_id == "a1"


def test_oversized_body_and_batch_are_413(client):
    big = {"user_id": "u", "event": "a", "properties": {"x": "y" * 600_000}}
    assert client.post("/v1/events", json=big).status_code == 413
    many = {"batch": [{"user_id": "u", "event": "a"}] * 2501}
    assert client.post("/v1/events", json=many).status_code == 413


def test_properties_over_32_kib_are_refused_by_field(client):
    r = client.post(
        "/v1/events", json={"user_id": "u", "event": "a", "properties": {"x": "y" * 40_000}}
    )
    assert r.status_code == 400
    assert r.json()["detail"][0]["field"] == "properties"


def test_properties_at_the_limit_pass_however_large_the_whole_event(client, publisher):
    at_limit = {"x": "y" * (32 * 1024 - len('{"x":""}'))}
    event = {"user_id": "u", "event": "a", "properties": at_limit, "context": {"c": "z" * 40_000}}
    assert client.post("/v1/events", json=event).status_code == 202
    assert publisher.events()[0].properties == at_limit
    over = {"x": at_limit["x"] + "y"}
    r = client.post("/v1/events", json={**event, "properties": over})
    assert r.status_code == 400
    assert r.json()["detail"][0] == {
        "index": 0,
        "field": "properties",
        "reason": "is 32769 bytes serialized; at most 32768",
    }


def test_clock_skew_is_corrected_from_sent_at(client, publisher):
    event = {
        "user_id": "u",
        "event": "a",
        "timestamp": "2020-01-01T00:00:00Z",
        "sent_at": "2020-01-01T00:01:00Z",
    }
    client.post("/v1/events", json=event)
    [canonical] = publisher.events()
    assert (canonical.received_at - canonical.timestamp).total_seconds() == pytest.approx(60)
    assert "skew_corrected" in canonical.flags


def test_far_future_timestamps_are_replaced_and_flagged(client, publisher):
    client.post(
        "/v1/events", json={"user_id": "u", "event": "a", "timestamp": "2199-01-01T00:00:00Z"}
    )
    [canonical] = publisher.events()
    assert canonical.timestamp == canonical.received_at
    assert canonical.flags == ("future_timestamp_replaced",)


def test_epoch_milliseconds_are_accepted(client, publisher):
    millis = (int(time.time()) - 86_400) * 1000 + 123
    client.post("/v1/events", json={"user_id": "u", "event": "a", "timestamp": millis})
    assert publisher.events()[0].timestamp.timestamp() == pytest.approx(millis / 1000)


def test_broker_unavailable_is_503_with_retry_after(client, publisher):
    publisher.failure = Unavailable("down")
    r = client.post("/v1/events", json={"user_id": "u", "event": "a"})
    assert (r.status_code, r.headers["retry-after"]) == (503, "5")


def test_full_producer_buffer_is_429(client, publisher):
    publisher.failure = Overloaded("full")
    assert client.post("/v1/events", json={"user_id": "u", "event": "a"}).status_code == 429


def test_rate_limit_per_key_is_429(publisher):
    app = create_app(IngestSettings(rate_limit_per_key=5), publisher=publisher, keys=FakeKeys())
    with TestClient(app) as c:
        batch = {"batch": [{"user_id": "u", "event": "a"}] * 5}
        assert c.post("/v1/events", json=batch, auth=(KEY, "")).status_code == 202
        r = c.post("/v1/events", json=batch, auth=(KEY, ""))
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
EVENT_FIELDS = ("event_id", "user_id", "anonymous_id", "event", "timestamp", "sent_at")
SEGMENT_FIELDS = ("messageId", "userId", "anonymousId", "type", "traits", "groupId", "previousId")
event_like = st.fixed_dictionaries(
    {},
    optional=dict.fromkeys(
        (*EVENT_FIELDS, *SEGMENT_FIELDS, "name", "properties", "context"), json_values
    ),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    path=st.sampled_from(["/v1/events", "/v1/batch", "/v1/t", "/v1/i", "/v1/g", "/v1/a"]),
    body=json_values
    | event_like
    | st.fixed_dictionaries({"batch": st.lists(event_like | json_values, max_size=5)}),
)
def test_arbitrary_json_never_causes_a_server_error(client, path, body):
    r = client.post(path, content=json.dumps(body), headers={"content-type": "text/plain"})
    assert r.status_code in (200, 202, 400, 413)
    assert "detail" in r.json() or "accepted" in r.json()


def test_segment_track_page_identify_alias_become_events(client, publisher):
    assert (
        client.post(
            "/v1/track", json={"userId": 42, "event": "Signed Up", "properties": {"plan": "pro"}}
        ).status_code
        == 200
    )
    client.post(
        "/v1/page",
        json={"anonymousId": "a1", "name": "Pricing", "properties": {"path": "/pricing"}},
    )
    client.post("/v1/screen", json={"anonymousId": "a1", "name": "Home"})
    client.post(
        "/v1/identify", json={"userId": "u1", "anonymousId": "a1", "traits": {"email": "x@y.z"}}
    )
    client.post("/v1/alias", json={"userId": "u1", "previousId": "a1"})
    got = [(e.event, e.person_id, e.properties) for e in publisher.events()]
    assert got == [
        ("Signed Up", "42", {"plan": "pro"}),
        ("page_view", "a1", {"path": "/pricing", "name": "Pricing"}),
        ("screen_view", "a1", {"name": "Home"}),
        ("identify", "u1", {"email": "x@y.z"}),
        ("alias", "u1", {"previous_id": "a1"}),
    ]
    assert publisher.events()[3].anonymous_id == "a1"


def test_segment_batch_with_write_key_in_body_and_segment_field_names_in_errors(client, publisher):
    body = {
        "writeKey": KEY,
        "sentAt": "2026-01-01T00:00:10Z",
        "batch": [
            {
                "type": "track",
                "userId": "u",
                "event": "a",
                "messageId": "m1",
                "timestamp": "2026-01-01T00:00:00Z",
            },
            {"type": "track", "event": "b"},
            {"type": "teleport", "userId": "u"},
        ],
    }
    r = client.post("/v1/batch", json=body, auth=None)
    assert r.status_code == 200
    assert [(p["index"], p["field"]) for p in r.json()["rejected"]] == [(1, "(event)"), (2, "type")]
    [event] = publisher.events()
    assert event.event_id == "m1"
    assert (event.received_at - event.timestamp).total_seconds() == pytest.approx(10, abs=1)


def test_gzip_bodies_are_accepted_and_gzip_bombs_refused(client, publisher):
    import gzip

    body = gzip.compress(json.dumps({"userId": "u", "event": "a"}).encode())
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    assert client.post("/v1/track", content=body, headers=headers).status_code == 200
    bomb = gzip.compress(b" " * 2_000_000)
    assert client.post("/v1/track", content=bomb, headers=headers).status_code == 413


def test_browsers_get_cors_answers_for_allowed_origins(publisher):
    settings = IngestSettings(cors_origins="https://shop.example", rate_limit_per_key=0)
    with TestClient(create_app(settings, publisher=publisher, keys=FakeKeys())) as c:
        preflight = {
            "origin": "https://shop.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        }
        ok = c.options("/v1/events", headers=preflight)
        assert ok.headers["access-control-allow-origin"] == "https://shop.example"
        other = c.options("/v1/events", headers={**preflight, "origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
