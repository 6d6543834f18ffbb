"""/metrics as a route of the ingest app: answered at its own path, in the scraper's format."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.unit.test_ingest_api import client, publisher  # noqa: F401 - fixtures


def test_metrics_is_answered_at_its_own_path_without_a_redirect(client):  # noqa: F811
    answer = client.get("/metrics", follow_redirects=False)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'funnel_ingest_events_total{outcome="overloaded",reason="buffer_full"}' in answer.text


def test_metrics_answers_openmetrics_when_the_scraper_asks_for_it(client: TestClient):  # noqa: F811
    answer = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")


def test_metrics_is_left_out_of_the_api_description(client):  # noqa: F811
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]
