"""Ingest's OpenAPI document: a schema for every request body, every status declared, and
the documented schemas accept what the SDKs send (analytics.js bodies are checked in the
browser tests)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from segment.analytics import Client
from segment.analytics.request import DatetimeSerializer

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.ingest_fakes import FakeKeys, FakePublisher

ERRORS = {"400", "401", "408", "413", "415", "429", "503"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    app = create_app(IngestSettings(), publisher=FakePublisher(), keys=FakeKeys())
    return app.openapi()


def accepts(doc: dict[str, Any], path: str, body: Any, media: str = "application/json") -> bool:
    schema = doc["paths"][path]["post"]["requestBody"]["content"][media]["schema"]
    try:
        jsonschema.validate(body, {**schema, "components": doc["components"]})
    except jsonschema.ValidationError:
        return False
    return True


def test_every_post_route_documents_its_request_body_for_json_and_text_plain(doc):
    posts = {path: ops["post"] for path, ops in doc["paths"].items() if "post" in ops}
    assert len(posts) == 1 + 7 * 2  # /v1/events; six calls and batch, long and short
    for path, operation in posts.items():
        content = operation["requestBody"]["content"]
        assert set(content) == {"application/json", "text/plain"}, path
        for media in content.values():
            ref = media["schema"].get("$ref") or media["schema"]["oneOf"][0]["$ref"]
            assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"]


def test_every_route_declares_every_status_it_answers_with_the_error_body(doc):
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if method == "post":
                assert set(responses) >= ERRORS, path
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)


def analytics_python_messages() -> list[dict[str, Any]]:
    """Messages exactly as Segment's Python SDK builds them (send=False keeps them here)."""
    client = Client("wk_test", send=False)
    calls = [
        client.track("u1", "Order Completed", {"revenue": 12.5}),
        client.page("u1", category="Docs", name="Pricing", properties={"path": "/pricing"}),
        client.screen(anonymous_id="a1", name="Home"),
        client.identify("u1", {"email": "u1@example.com"}, anonymous_id="a1"),
        client.group("u1", "acme", {"name": "Acme"}),
        client.alias("a1", "u1"),
    ]
    return [message for _, message in calls]


def test_the_schemas_accept_what_analytics_python_sends(doc):
    messages = analytics_python_messages()
    for message in messages:
        assert accepts(doc, f"/v1/{message['type']}", _json(message)), message
    batch = {"batch": [_json(m) for m in messages], "sentAt": "2026-11-30T10:00:00+00:00"}
    assert accepts(doc, "/v1/batch", {**batch, "writeKey": "wk_test"})


def test_the_schemas_accept_rudderstack_and_our_own_events_and_refuse_what_is_refused(doc):
    rudderstack = {
        "type": "identify",
        "userId": "u1",
        "anonymousId": "a1",
        "originalTimestamp": "2026-11-30T09:00:00.000Z",
        "context": {"traits": {"email": "u1@example.com"}, "library": {"name": "RudderLabs"}},
        "channel": "web",
    }
    assert accepts(doc, "/v1/i", rudderstack, "text/plain")
    assert accepts(doc, "/v1/b", {"batch": [rudderstack]})
    assert not accepts(doc, "/v1/b", {"batch": []})
    assert not accepts(doc, "/v1/b", {"batch": [{**rudderstack, "type": "teleport"}]})
    assert not accepts(doc, "/v1/t", {"userId": "u1"})  # no event
    assert not accepts(doc, "/v1/g", {"userId": "u1"})  # no groupId
    event = {"user_id": "u1", "event": "visit", "timestamp": 1_764_000_000_000}
    assert accepts(doc, "/v1/events", event)
    assert accepts(doc, "/v1/events", {"batch": [event, {**event, "anonymous_id": "a"}]})
    assert not accepts(doc, "/v1/events", {"event": "visit"})  # nobody
    assert not accepts(doc, "/v1/events", {"user_id": "u1"})  # no name


def _json(message: dict[str, Any]) -> dict[str, Any]:
    """The message as it goes over the wire (the SDK's own JSON encoding of dates)."""
    return dict(json.loads(json.dumps(message, cls=DatetimeSerializer)))
