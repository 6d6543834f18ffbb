"""Ingest refuses what cannot be stored, event by event, and every refusal has one shape."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient

from services.ingest.app import create_app
from services.ingest.publisher import Unavailable
from services.ingest.settings import IngestSettings
from shared.errors import ErrorBody
from shared.retention import ingest_horizon
from tests.ingest_fakes import KEY, FakeKeys, FakePublisher

NUL = "a\x00b"
VALID = {"user_id": "u", "event": "visit"}


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


def make_client(publisher: FakePublisher, **settings) -> TestClient:
    app = create_app(
        IngestSettings(rate_limit_per_key=0, **settings), publisher=publisher, keys=FakeKeys()
    )
    client = TestClient(app)
    client.auth = (KEY, "")
    return client


@pytest.fixture
def client(publisher):
    with make_client(publisher) as c:
        yield c


def nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


def fields(response: httpx.Response) -> list[tuple[int | None, str]]:
    body = response.json()
    items = body["rejected"] if response.status_code in (200, 202) else body["detail"]
    return [(i.get("index"), i["field"]) for i in items]


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({**VALID, "event": NUL}, "event"),
        ({**VALID, "user_id": NUL}, "user_id"),
        ({"anonymous_id": NUL, "event": "visit"}, "anonymous_id"),
        ({**VALID, "event_id": NUL}, "event_id"),
        ({**VALID, "properties": {"plan": NUL}}, "properties.plan"),
        ({**VALID, "properties": {"list": ["ok", NUL]}}, "properties.list.1"),
        ({**VALID, "properties": {NUL: 1}}, f"properties.{NUL}"),
        ({**VALID, "context": {"page": {"title": NUL}}}, "context.page.title"),
        ({**VALID, "properties": nested(40)}, "properties" + ".a" * 32),
        ({**VALID, "context": nested(300)}, "context" + ".a" * 32),
    ],
)
def test_an_unstorable_event_is_refused_alone_naming_its_field(client, publisher, event, field):
    r = client.post("/v1/events", json={"batch": [VALID, event]})
    assert r.status_code == 202
    assert (r.json()["accepted"], fields(r)) == (1, [(1, field)])
    [kept] = publisher.rejected()
    assert kept["errors"][0]["field"] == field


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"userId": NUL, "event": "a"}, "userId"),
        ({"anonymousId": NUL, "event": "a"}, "anonymousId"),
        ({"userId": "u", "event": "a", "messageId": NUL}, "messageId"),
        ({"userId": "u", "event": NUL}, "event"),
        ({"userId": "u", "event": "a", "properties": {"k": NUL}}, "properties.k"),
        ({"userId": "u", "event": "a", "sentAt": NUL}, "sentAt"),
    ],
)
def test_segment_fields_are_named_as_the_client_sent_them(client, message, field):
    r = client.post("/v1/track", json=message)
    assert (r.status_code, fields(r)) == (400, [(0, field)])


@pytest.mark.parametrize(
    ("path", "message", "field"),
    [
        ("/v1/identify", {"userId": "u", "traits": {"email": NUL}}, "traits.email"),
        ("/v1/identify", {"userId": "u", "context": {"traits": {"x": NUL}}}, "context.traits.x"),
        ("/v1/identify", {"userId": "u", "traits": nested(40)}, "traits" + ".a" * 32),
        ("/v1/page", {"userId": "u", "name": NUL}, "name"),
        ("/v1/group", {"userId": "u", "groupId": NUL}, "groupId"),
        ("/v1/alias", {"userId": "u", "previousId": NUL}, "previousId"),
        ("/v1/group", {"userId": "u"}, "groupId"),
        ("/v1/alias", {"userId": "u"}, "previousId"),
        ("/v1/identify", {"userId": "u", "traits": ["not", "an", "object"]}, "traits"),
    ],
)
def test_reshaped_segment_fields_are_checked_under_their_own_names(client, path, message, field):
    r = client.post(path, json=message)
    assert (r.status_code, fields(r)) == (400, [(0, field)])


def test_json_nested_past_1024_levels_is_a_400_for_the_body(client):
    body = '{"batch": [' + "[" * 1100 + "]" * 1100 + "]}"
    r = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json() == {"detail": [{"field": "body", "reason": "nests deeper than 1024 levels"}]}


def test_a_deeply_nested_refused_event_is_kept_cut_short_and_the_others_accepted(client, publisher):
    deep = {"user_id": nested(900), "event": "visit"}
    r = client.post("/v1/events", json={"batch": [deep, VALID]})
    assert r.status_code == 202
    assert (r.json()["accepted"], fields(r)) == (1, [(0, "user_id")])
    [kept] = publisher.rejected()
    text = json.dumps(kept["event"])
    assert "(cut: nested deeper than 200 levels)" in text


def test_deep_nesting_in_a_field_ingest_ignores_does_not_refuse_the_event(client, publisher):
    r = client.post("/v1/events", json={**VALID, "unknown": nested(900)})
    assert r.status_code == 202
    assert publisher.events()[0].event == "visit"


@pytest.mark.parametrize("path", ["/v1/events", "/v1/batch", "/v1/b"])
def test_an_empty_batch_is_a_400_naming_batch(client, path):
    r = client.post(path, json={"batch": []})
    assert r.status_code == 400
    assert r.json() == {"detail": [{"field": "batch", "reason": "must hold at least one event"}]}


def test_an_event_older_than_the_retention_is_refused_naming_timestamp(publisher):
    now = datetime.now(UTC)
    oldest = ingest_horizon(10)
    old = {**VALID, "event_id": "old", "timestamp": (oldest - timedelta(seconds=1)).isoformat()}
    edge = {**VALID, "event_id": "edge", "timestamp": oldest.isoformat()}
    # Sent long ago too: the client's clock is off, not the event old. Corrected, it is now.
    skewed = {**old, "event_id": "skewed", "sent_at": old["timestamp"]}
    with make_client(publisher, retention_days=10) as c:
        r = c.post("/v1/events", json={"batch": [old, edge, skewed]})
    assert r.status_code == 202
    [problem] = r.json()["rejected"]
    assert (problem["index"], problem["field"]) == (0, "timestamp")
    assert "retention" in problem["reason"]
    assert "RETENTION_DAYS=10" in problem["reason"]
    assert [e.event_id for e in publisher.events()] == ["edge", "skewed"]
    assert oldest.date() == (now - timedelta(days=9)).date()
    [kept] = publisher.rejected()
    assert (kept["event"]["event_id"], kept["errors"]) == ("old", [problem])


def test_errors_of_every_status_have_the_one_body_shape(publisher):
    with make_client(publisher, max_body_bytes=1000, max_batch_events=2) as c:
        answers = {
            401: c.post("/v1/events", json=VALID, auth=("nope", "")),
            413: c.post("/v1/events", json={"batch": [VALID] * 3}),
            415: c.post("/v1/events", content=b"<a/>", headers={"content-type": "text/xml"}),
            404: c.post("/v1/nowhere", json=VALID),
            405: c.get("/v1/events"),
        }
        too_big = c.post("/v1/events", json={**VALID, "properties": {"x": "y" * 2000}})
        publisher.failure = Unavailable("down")
        answers[503] = c.post("/v1/events", json=VALID)
    assert (too_big.status_code, too_big.headers["connection"]) == (413, "close")
    for status, r in answers.items():
        assert r.status_code == status
        assert ErrorBody.model_validate(r.json()).detail, r.text
    assert fields(answers[401]) == [(None, "authorization")]
    assert answers[503].headers["retry-after"] == "5"


async def test_a_body_that_does_not_arrive_in_time_is_a_408_and_the_connection_closed():
    app = create_app(
        IngestSettings(rate_limit_per_key=0, body_timeout_s=0.2),
        publisher=FakePublisher(),
        keys=FakeKeys(),
    )

    async def trickle():
        yield b'{"user_id": "u", '
        await asyncio.sleep(1)
        yield b'"event": "a"}'

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as c:
            r = await c.post("/v1/events", content=trickle(), auth=(KEY, ""))
    assert (r.status_code, r.headers["connection"]) == (408, "close")
    assert r.json() == {"detail": [{"field": "body", "reason": "not received within 0.2 s"}]}
