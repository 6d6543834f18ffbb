"""The README's wait recipe, run as printed against the whole stack: after it returns, one
report read counts everything sent before it (ingest -> broker -> aggregator -> API)."""

from __future__ import annotations

import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from tests.stack import eventually

README = Path(__file__).parent.parent.parent / "README.md"
FUNNEL = {
    "name": "pricing to signup",
    "steps": [
        {"event": "page_view", "where": [{"property": "path", "op": "eq", "value": "/pricing"}]},
        {"event": "signup"},
    ],
}


def recipe(ingest_port: int, api_port: int) -> str:
    """The first shell block of the README's freshness section, pointed at this stack."""
    section = README.read_text().split("### Freshness", 1)[1].split("\n### ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None, "no shell block in the README's freshness section"
    script = block.group(1).replace("localhost:8001", f"127.0.0.1:{ingest_port}")
    return script.replace("localhost:8003", f"127.0.0.1:{api_port}")


def test_the_readmes_wait_recipe_returns_once_everything_sent_is_counted(stack):
    with stack.api() as api, stack.ingest() as ingest:
        funnel_id = api.post("/v1/funnels", json=FUNNEL).json()["id"]
        report = f"/v1/funnels/{funnel_id}/report"
        eventually(
            lambda: api.get(report).json()["backfill"]["done"],
            bool,
            timeout_s=60,
            what="the new funnel's backfill",
        )
        visits = [
            {"user_id": f"early-{n}", "event": "page_view", "properties": {"path": "/pricing"}}
            for n in range(300)
        ]
        for chunk in range(0, len(visits), 100):
            r = ingest.post("/v1/events", json={"batch": visits[chunk : chunk + 100]})
            assert r.status_code == 202, r.text
        before = datetime.now(UTC)
        env = {**os.environ, "W": stack.keys["write"], "A": stack.keys["admin"]}
        script = recipe(stack.ports["ingest"], stack.ports["api"])
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr + stack.logs()
        body = api.get(report).json()  # one read, no retries: the recipe waited for it
        assert [s["persons"] for s in body["steps"]] == [301, 0], body
        assert datetime.fromisoformat(body["complete_to"]) >= before
        freshness = api.get("/v1/freshness").json()
        assert len(freshness["partitions"]) == stack.partitions
        assert datetime.fromisoformat(freshness["complete_to"]) >= before
