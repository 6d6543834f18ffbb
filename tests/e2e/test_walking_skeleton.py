"""The whole path with real processes: HTTP -> ingest -> Kafka -> aggregator -> API."""

from __future__ import annotations

from tests.stack import eventually, report_persons

RANGE = {"from": "2026-01-01", "to": "2026-02-01"}


def event(person: str, name: str, minute: int) -> dict[str, str]:
    return {"user_id": person, "event": name, "timestamp": f"2026-01-05T10:{minute:02d}:00Z"}


def test_events_posted_over_http_reach_the_funnel_report(stack):
    with stack.api() as api, stack.ingest() as ingest:
        created = api.post(
            "/v1/funnels",
            json={
                "name": "signup",
                "steps": [{"event": "visit"}, {"event": "signup"}, {"event": "pay"}],
            },
        )
        assert created.status_code == 201, created.text
        funnel_id = created.json()["id"]
        batch = [
            event("alice", "visit", 0),
            event("alice", "signup", 5),
            event("alice", "pay", 9),
            event("bob", "visit", 1),
            event("bob", "signup", 2),
            event("carol", "visit", 3),
        ]
        # Out of order and partly twice (same event ids) on purpose.
        first = ingest.post("/v1/events", json={"batch": batch[3:]})
        assert first.status_code == 202, first.text
        second = ingest.post("/v1/events", json={"batch": batch[:3]})
        assert second.status_code == 202
        single = ingest.post("/v1/events", json={**event("dave", "visit", 4), "event_id": "d-1"})
        assert single.status_code == 202
        again = ingest.post("/v1/events", json={**event("dave", "visit", 4), "event_id": "d-1"})
        assert again.status_code == 202
        counts = eventually(
            lambda: report_persons(api, funnel_id, **RANGE),
            lambda c: c == [4, 2, 1],
            timeout_s=60,
            what="persons per step",
        )
        assert counts == [4, 2, 1]


def test_a_funnel_defined_after_the_events_is_backfilled(stack):
    with stack.api() as api, stack.ingest() as ingest:
        batch = [event("erin", "look", 10), event("erin", "book", 11), event("fay", "look", 12)]
        assert ingest.post("/v1/events", json={"batch": batch}).status_code == 202
        funnel_id = api.post(
            "/v1/funnels", json={"name": "booking", "steps": [{"event": "look"}, {"event": "book"}]}
        ).json()["id"]
        eventually(
            lambda: report_persons(api, funnel_id, **RANGE),
            lambda c: c == [2, 1],
            timeout_s=60,
            what="backfilled persons per step",
        )
