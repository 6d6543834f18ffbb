"""The query API's OpenAPI document describes every answer of every route."""

from __future__ import annotations

import pytest

from services.api.app import create_app
from services.api.settings import ApiSettings

ERRORS = {"400", "401", "403", "404", "409", "410", "413", "422", "503"}
# Answered without any key: the health check, and charts behind a share link's token.
PUBLIC = {"GET /healthz", "GET /v1/shared/{token}/chart.svg"}


@pytest.fixture(scope="module")
def spec():
    return create_app(ApiSettings(database_url="sqlite+aiosqlite:///unused.db")).openapi()


def _operations(spec):
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_every_route_declares_a_schema_for_each_of_its_answers(spec):
    for name, operation in _operations(spec):
        answers = operation["responses"]
        success = [s for s in answers if s.startswith("2")]
        assert len(success) == 1, name
        for status, answer in answers.items():
            if status == "204":
                assert "content" not in answer, name
                continue
            [(media, body)] = answer["content"].items()
            assert body["schema"], (name, status)
            if status in ERRORS:
                assert (media, body["schema"]) == (
                    "application/json",
                    {"$ref": "#/components/schemas/ErrorBody"},
                ), (name, status)
            else:
                assert status in ("200", "201"), (name, status)
                assert "$ref" in body["schema"] or media == "image/svg+xml", (name, status)


def test_every_route_that_takes_a_body_declares_its_schema(spec):
    with_body = {name for name, op in _operations(spec) if "requestBody" in op}
    assert with_body == {
        "POST /v1/funnels",
        "PUT /v1/funnels/{funnel_id}",
        "PATCH /v1/funnels/{funnel_id}",
        "POST /v1/funnels/from-template",
        "POST /v1/funnels/{funnel_id}/plan",
        "POST /v1/webhooks",
        "PATCH /v1/webhooks/{webhook_id}",
        "POST /v1/projects",
        "POST /v1/projects/{project_id}/keys",
        "POST /v1/share-links",
    }
    for name, operation in _operations(spec):
        if "requestBody" in operation:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            assert schema["$ref"].startswith("#/components/schemas/"), name
            assert "413" in operation["responses"], name


def test_keyed_routes_declare_the_key_errors_and_the_database_outage(spec):
    for name, operation in _operations(spec):
        if name in PUBLIC:
            assert not {"401", "403"} & set(operation["responses"]), name
            assert "security" not in operation, name
        else:
            assert {"401", "403", "503"} <= set(operation["responses"]), name
        if "{" in name:
            assert "404" in operation["responses"], name
        if operation.get("parameters") or "requestBody" in operation:
            assert "422" in operation["responses"], name


def test_one_error_shape_and_no_other(spec):
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert schemas["ErrorBody"]["properties"]["detail"]["items"] == {
        "$ref": "#/components/schemas/ErrorItem"
    }
    assert set(schemas["ErrorItem"]["required"]) == {"field", "reason"}
