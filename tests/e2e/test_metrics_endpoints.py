"""Each service's real /metrics: answered directly, known series at 0, accepted by promtool."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.stack import eventually, report_persons

# Label sets the services know in advance: each must be exported before it first happens.
KNOWN = {
    "ingest": {
        "funnel_ingest_events_total": [
            {"outcome": "accepted", "reason": ""},
            {"outcome": "rejected", "reason": "invalid"},
            {"outcome": "unavailable", "reason": "broker"},
            {"outcome": "overloaded", "reason": "rate_limited"},
            {"outcome": "overloaded", "reason": "buffer_full"},
        ],
    },
    "aggregator": {
        "funnel_aggregator_events_total": [
            {"outcome": o} for o in ("stored", "duplicate", "dead_letter", "expired")
        ],
        "funnel_aggregator_person_histories_total": [{"source": s} for s in ("memory", "database")],
        "funnel_webhook_deliveries_total": [
            {"outcome": o} for o in ("delivered", "retry", "failed", "disabled", "refused")
        ],
    },
    "api": {
        "funnel_api_reports_total": [{"freshness": f} for f in ("computed", "exact", "stale")],
    },
}
# What the traffic below certainly makes happen, and what it certainly does not.
COUNTED = {
    ("funnel_ingest_events_total", (("outcome", "accepted"), ("reason", ""))),
    ("funnel_aggregator_events_total", (("outcome", "stored"),)),
    ("funnel_api_reports_total", (("freshness", "computed"),)),
}
NOT_YET = {"unavailable", "overloaded", "rejected", "dead_letter", "expired", "stale"} | {
    "delivered",
    "retry",
    "failed",
    "disabled",
    "refused",
}


def promtool() -> str:
    beside = Path(sys.executable).with_name("promtool")
    found = str(beside) if beside.exists() else shutil.which("promtool")
    assert found, "promtool is missing: `make test-e2e` installs it (.venv/bin/promtool)"
    return found


def urls(stack) -> dict[str, str]:
    return {
        "ingest": f"http://127.0.0.1:{stack.ports['ingest']}/metrics",
        "api": f"http://127.0.0.1:{stack.ports['api']}/metrics",
        "aggregator": f"http://127.0.0.1:{stack.aggregator_metrics_ports[0]}/metrics",
    }


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture(scope="module")
def scraped(stack) -> dict[str, str]:
    """Every service's /metrics after one funnel, two persons' events and a report."""
    with stack.api() as api, stack.ingest() as ingest:
        steps = [{"event": "visit"}, {"event": "visit"}]
        funnel_id = api.post("/v1/funnels", json={"name": "twice", "steps": steps}).json()["id"]
        batch = [
            {"user_id": "a", "event": "visit", "timestamp": "2026-01-05T10:00:00Z"},
            {"user_id": "a", "event": "visit", "timestamp": "2026-01-05T10:01:00Z"},
            {"user_id": "b", "event": "visit", "timestamp": "2026-01-05T10:02:00Z"},
        ]
        assert ingest.post("/v1/events", json={"batch": batch}).status_code == 202
        range_ = {"from": "2026-01-01", "to": "2026-02-01"}
        eventually(
            lambda: report_persons(api, funnel_id, **range_),
            lambda c: c == [2, 1],
            timeout_s=60,
            what="persons",
        )
    eventually(
        lambda: httpx.get(urls(stack)["api"]).text,
        lambda text: "funnel_step_persons{" in text,
        timeout_s=60,
        what="the API's step gauges",
    )
    return {name: httpx.get(url).text for name, url in urls(stack).items()}


def test_metrics_answers_200_directly_on_every_service(stack):
    for name, url in urls(stack).items():
        answer = httpx.get(url, follow_redirects=False)
        assert answer.status_code == 200, f"{name}: {answer.status_code}"
        assert answer.headers["content-type"].startswith("text/plain"), name
        assert "# TYPE" in answer.text, name


def test_label_sets_known_in_advance_are_exported_and_at_zero_until_they_happen(scraped):
    for service, families in KNOWN.items():
        found = samples(scraped[service])
        for metric, label_sets in families.items():
            for labels in label_sets:
                key = (metric, tuple(sorted(labels.items())))
                assert key in found, f"{service} does not export {key}"
                if key in COUNTED:
                    assert found[key] > 0, f"{service}: {key} did not count the traffic"
                if NOT_YET & set(labels.values()):
                    assert found[key] == 0, f"{service}: {key} is {found[key]}"


def test_promtool_accepts_every_services_metrics(scraped):
    for service, text in scraped.items():
        checked = subprocess.run(
            [promtool(), "check", "metrics"],
            input=text.encode(),
            capture_output=True,
            check=False,
        )
        problems = (checked.stdout + checked.stderr).decode()
        assert (checked.returncode, problems) == (0, ""), f"{service}:\n{problems}"
