"""Ingest against the real broker: outages answer 503, acknowledged events are kept once."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from segment.analytics import Client

from shared.events import EVENTS_TOPIC, REJECTED_TOPIC, CanonicalEvent
from shared.retention import ingest_horizon
from tests.stack import eventually, read_topic


def topic_events(stack) -> list[CanonicalEvent]:
    return [
        CanonicalEvent.from_json(r.value) for r in read_topic(stack.broker.bootstrap, EVENTS_TOPIC)
    ]


def test_broker_outage_gives_503_and_acknowledged_events_are_kept_exactly_once(stack):
    acknowledged: list[str] = []
    with stack.ingest() as ingest:

        def post(tag: str) -> int:
            batch = [
                {"user_id": f"u{i}", "event": "visit", "event_id": f"{tag}-{i}"} for i in range(20)
            ]
            r = ingest.post("/v1/events", json={"batch": batch})
            if r.status_code == 202:
                acknowledged.extend(r.json()["event_ids"])
            return r.status_code

        assert post("before") == 202
        stack.broker.freeze()
        try:
            started = time.monotonic()
            r = ingest.post(
                "/v1/events", json={"user_id": "u", "event": "visit", "event_id": "frozen-0"}
            )
            assert r.status_code == 503
            assert r.headers["retry-after"] == "5"
            assert time.monotonic() - started < 20
        finally:
            stack.broker.thaw()
        tags = iter(f"after{i}" for i in range(100))
        eventually(
            lambda: post(next(tags)),
            lambda status: status == 202,
            timeout_s=60,
            what="202 after thaw",
        )
    on_topic = Counter(e.event_id for e in topic_events(stack))
    assert {i: on_topic[i] for i in acknowledged} == dict.fromkeys(acknowledged, 1)


def test_a_real_segment_sdk_sends_track_page_identify_and_batches(stack):
    host = f"http://127.0.0.1:{stack.ports['ingest']}"
    errors: list[Exception] = []
    client = Client(
        stack.keys["write"], host=host, on_error=lambda e, _batch: errors.append(e), max_retries=1
    )
    client.track(
        "sdk-user", "Order Completed", {"revenue": 12.5}, context={"campaign": {"source": "ads"}}
    )
    client.page("sdk-user", name="Pricing", properties={"path": "/pricing"})
    client.identify("sdk-user", {"email": "sdk@example.com"}, anonymous_id="anon-7")
    for i in range(30):
        client.track(anonymous_id="anon-7", event="Scrolled", properties={"depth": i})
    client.flush()
    client.shutdown()
    assert errors == []

    def mine() -> list[CanonicalEvent]:
        return [e for e in topic_events(stack) if e.person_id in ("sdk-user", "anon-7")]

    got = eventually(mine, lambda es: len(es) == 33, timeout_s=30, what="SDK events on the topic")
    by_name = {e.event: e for e in got}
    assert by_name["Order Completed"].properties == {"revenue": 12.5}
    assert by_name["Order Completed"].context["campaign"] == {"source": "ads"}
    assert by_name["page_view"].properties == {"path": "/pricing", "name": "Pricing"}
    assert (by_name["identify"].user_id, by_name["identify"].anonymous_id) == ("sdk-user", "anon-7")
    assert sorted(e.properties["depth"] for e in got if e.event == "Scrolled") == list(range(30))
    assert len({e.event_id for e in got}) == 33  # the SDK's messageIds are kept


def test_invalid_events_are_kept_on_the_rejected_topic(stack):
    with stack.ingest() as ingest:
        r = ingest.post("/v1/events", json={"batch": [{"user_id": "u", "event": ""}]})
        assert r.status_code == 400
    rejected = read_topic(stack.broker.bootstrap, REJECTED_TOPIC)
    assert any(b'"field":"event"' in r.value for r in rejected)


@pytest.mark.parametrize("path", ["/v1/events", "/v1/track"])
def test_a_missing_write_key_is_401_over_http(stack, path):
    with stack.ingest() as ingest:
        assert ingest.post(path, json={"userId": "u", "event": "a"}, auth=None).status_code == 401


def test_an_event_older_than_the_retention_is_refused_by_field_and_kept_on_the_rejected_topic(
    stack,
):
    oldest = ingest_horizon(400)  # the stack runs with the default RETENTION_DAYS
    old = {
        "type": "track",
        "userId": "retained",
        "event": "visit",
        "messageId": "too-old",
        "timestamp": (oldest - timedelta(hours=1)).isoformat(),
    }
    fresh = {**old, "messageId": "fresh", "timestamp": datetime.now(UTC).isoformat()}
    with stack.ingest() as ingest:
        r = ingest.post("/v1/batch", json={"batch": [old, fresh]})
    assert r.status_code == 200
    [problem] = r.json()["rejected"]
    assert (problem["index"], problem["field"]) == (0, "timestamp")
    assert "RETENTION_DAYS=400" in problem["reason"]

    def rejected() -> list[Any]:
        records = read_topic(stack.broker.bootstrap, REJECTED_TOPIC)
        return [d for d in map(orjson.loads, (r.value for r in records)) if d["event"] == old]

    [kept] = eventually(rejected, lambda found: len(found) == 1, timeout_s=30, what="rejected")
    assert kept["errors"] == [problem]
    on_topic = eventually(
        lambda: [e.event_id for e in topic_events(stack) if e.person_id == "retained"],
        lambda ids: ids == ["fresh"],
        timeout_s=30,
        what="the fresh event alone on the events topic",
    )
    assert on_topic == ["fresh"]
