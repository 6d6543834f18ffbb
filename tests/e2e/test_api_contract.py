"""The running API against its own OpenAPI document, and its docs pages served offline.

schemathesis generates requests (valid and invalid) for every operation and checks each
answer: no 5xx, a declared status code, a declared content type and a body that matches the
declared schema. The API runs as its own process on a real SQLite database, with a read key
for the funnel reads and freshness, an instance key for projects and their keys, an admin key
for the rest, and a stored funnel, webhook, project and share link that most generated path
ids and tokens point at (so that reports, plans, changes and shared charts are reached, not
only 404s).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from services.devstack import free_port, spawn, stop_process, wait_for_port
from shared.clock import now_us
from shared.db import create_engine, migrate, sessionmaker
from shared.repository.keys import issue_key
from tests.helpers import create_key

# Test cases per operation; SCHEMATHESIS_MAX_EXAMPLES raises it for a longer hunt.
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25"))
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "missing_required_header",
        "unsupported_method",
    ]
)
CONFIG = """
headers = {{ Authorization = "Bearer {admin}" }}

[dictionaries.funnels]
values = ["{funnel}"]

[dictionaries.webhooks]
values = ["{webhook}"]

[dictionaries.projects]
values = ["contract"]

[dictionaries.tokens]
values = ["{token}"]

[parameters]
"path.funnel_id" = {{ dictionary = "funnels", probability = 0.8 }}
"path.webhook_id" = {{ dictionary = "webhooks", probability = 0.8 }}
"path.project_id" = {{ dictionary = "projects", probability = 0.8 }}
"path.token" = {{ dictionary = "tokens", probability = 0.8 }}

[[operations]]
include-name-regex = "^GET /v1/(funnel|freshness)"
headers = {{ Authorization = "Bearer {read}" }}

[[operations]]
include-path-regex = "^/v1/projects"
headers = {{ Authorization = "Bearer {instance}" }}

[[operations]]
include-method = "DELETE"

[operations.parameters]  # nothing the other operations need is deleted or revoked
"path.funnel_id" = "kept"
"path.webhook_id" = "kept"
"path.key_id" = "kept"
"path.link_id" = "kept"
"""


@dataclass(frozen=True)
class RunningApi:
    base: str
    keys: dict[str, str]
    funnel_id: str
    webhook_id: str
    token: str
    folder: Path


async def _keys(url: str) -> dict[str, str]:
    engine = create_engine(url)
    try:
        async with sessionmaker(engine).begin() as session:
            made = {s: await create_key(session, "contract", s) for s in ("admin", "read")}
            return {
                **made,
                "instance": (await issue_key(session, None, "instance", now_us=now_us())).key,
            }
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def running_api(tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract")
    url = f"sqlite+aiosqlite:///{folder / 'funnel.db'}"
    migrate(url)
    keys = asyncio.run(_keys(url))
    port = free_port()
    env = {
        "DATABASE_URL": url,
        "API_PORT": str(port),
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "LOG_LEVEL": "WARNING",
    }
    process = spawn(["api"], env, folder / "api.log")
    try:
        wait_for_port(port, 30)
        base = f"http://127.0.0.1:{port}"
        admin = {"Authorization": f"Bearer {keys['admin']}"}
        with httpx.Client(base_url=base, headers=admin, timeout=30) as client:
            funnel = {
                "name": "contract",
                "steps": [{"event": "visit"}, {"event": "signup"}, {"event": "pay"}],
                "breakdowns": ["channel"],
                "value_property": "amount",
            }
            funnel_id = client.post("/v1/funnels", json=funnel).json()["id"]
            hook = {"url": "http://127.0.0.1:9/hook", "event_types": ["funnel.converted"]}
            webhook_id = client.post("/v1/webhooks", json=hook).json()["id"]
            link = client.post("/v1/share-links", json={"funnel_id": funnel_id}).json()
        yield RunningApi(base, keys, funnel_id, webhook_id, link["token"], folder)
    finally:
        stop_process(process, grace_s=5)


def run_schemathesis(api: RunningApi, max_examples: int) -> subprocess.CompletedProcess[str]:
    config = api.folder / "schemathesis.toml"
    config.write_text(
        CONFIG.format(
            admin=api.keys["admin"],
            read=api.keys["read"],
            instance=api.keys["instance"],
            funnel=api.funnel_id,
            webhook=api.webhook_id,
            token=api.token,
        )
    )
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{api.base}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(max_examples),
        "--phases",
        "examples,coverage,fuzzing",
        "--seed",
        "1",
        # One worker: with two, two threads may parse lambdas' sources at once (hypothesis
        # describing strategies), and this CPython 3.11's AST constructor then fails now and
        # then with a spurious "SystemError: AST constructor recursion depth mismatch"
        # (CPython gh-106905; about one run in three once the API had 34 operations).
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--report",
        "json",
        "--report-dir",
        str(api.folder / "schemathesis-report"),
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=api.folder, check=False
    )


def test_every_answer_of_the_api_matches_its_openapi_document(running_api):
    done = run_schemathesis(running_api, MAX_EXAMPLES)
    summary = done.stdout[-6000:] + done.stderr[-3000:]
    [report] = (running_api.folder / "schemathesis-report").glob("json-*.json")
    run = json.loads(report.read_text())
    assert (run["exit_code"], run["failures"], run["errors"]) == (0, [], []), summary
    operations = len(create_app_spec_operations(running_api))
    assert run["operations"]["tested"] == operations == 36, summary
    assert run["test_cases"]["generated"] >= 20 * operations, summary
    log = (running_api.folder / "api.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def create_app_spec_operations(api: RunningApi) -> list[str]:
    spec = httpx.get(f"{api.base}/openapi.json", timeout=30).json()
    return [f"{m} {p}" for p, methods in spec["paths"].items() for m in methods]


def _assets(page: str) -> list[str]:
    return re.findall(r"""(?:src|href)=["']([^"']+)["']""", page)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_and_their_assets_are_served_by_the_api_itself(running_api, page):
    with httpx.Client(base_url=running_api.base, timeout=30) as client:
        r = client.get(page)
        assert (r.status_code, r.headers["content-type"].split(";")[0]) == (200, "text/html")
        assert not re.search(r"https?://", r.text), r.text  # nothing fetched from elsewhere
        assets = _assets(r.text)
        assert any(a.endswith(".js") for a in assets), assets
        for asset in assets:
            url = urljoin(running_api.base + page, asset)
            assert urlsplit(url).netloc == urlsplit(running_api.base).netloc, asset
            served = client.get(url)
            assert served.status_code == 200, asset
            assert len(served.content) > 1000, asset
        spec = client.get("/openapi.json")
        assert spec.json()["info"]["title"] == "Funnel Tracker API"
