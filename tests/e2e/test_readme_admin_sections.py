"""The README's blocks for projects and keys, freshness and share links, run as printed
against the whole stack (ingest -> broker -> aggregator -> API). After the wait recipe
returns, one report read counts everything sent before it."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from shared.clock import now_us
from shared.db import create_engine, sessionmaker
from shared.repository.keys import issue_key
from tests.stack import Stack, eventually

README = Path(__file__).parent.parent.parent / "README.md"
FUNNEL = {
    "name": "pricing to signup",
    "steps": [
        {"event": "page_view", "where": [{"property": "path", "op": "eq", "value": "/pricing"}]},
        {"event": "signup"},
    ],
}


def readme_block(section: str, stack: Stack) -> str:
    """The first shell block of a README section, pointed at this stack's ports."""
    text = README.read_text().split(f"### {section}", 1)[1].split("\n### ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", text, re.DOTALL)
    assert block is not None, f"no shell block in the README's {section!r} section"
    script = block.group(1).replace("localhost:8001", f"127.0.0.1:{stack.ports['ingest']}")
    return script.replace("localhost:8003", f"127.0.0.1:{stack.ports['api']}")


def run_block(section: str, stack: Stack, cwd: Path, **variables: str) -> str:
    """Run it with bash, failing on any command that fails; its output."""
    env = {**os.environ, "W": stack.keys["write"], "A": stack.keys["admin"], **variables}
    script = re.sub(r"^(\w+)=\w+_….*$", "", readme_block(section, stack), flags=re.MULTILINE)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr + stack.logs()
    return done.stdout


def _funnel(stack: Stack) -> str:
    with stack.api() as api:
        funnel_id = str(api.post("/v1/funnels", json=FUNNEL).json()["id"])
        eventually(
            lambda: api.get(f"/v1/funnels/{funnel_id}/report").json()["backfill"]["done"],
            bool,
            timeout_s=60,
            what="the new funnel's backfill",
        )
    return funnel_id


def test_the_readmes_wait_recipe_returns_once_everything_sent_is_counted(stack, tmp_path):
    funnel_id = _funnel(stack)
    with stack.api() as api, stack.ingest() as ingest:
        visits = [
            {"user_id": f"early-{n}", "event": "page_view", "properties": {"path": "/pricing"}}
            for n in range(300)
        ]
        for chunk in range(0, len(visits), 100):
            r = ingest.post("/v1/events", json={"batch": visits[chunk : chunk + 100]})
            assert r.status_code == 202, r.text
        before = datetime.now(UTC)
        run_block("Freshness", stack, tmp_path)
        body = api.get(f"/v1/funnels/{funnel_id}/report").json()  # one read: no retries
        assert [s["persons"] for s in body["steps"]] == [301, 0], body
        assert datetime.fromisoformat(body["complete_to"]) >= before
        freshness = api.get("/v1/freshness").json()
        assert len(freshness["partitions"]) == stack.partitions
        assert datetime.fromisoformat(freshness["complete_to"]) >= before


async def _instance_key(url: str) -> str:
    engine = create_engine(url)
    try:
        async with sessionmaker(engine).begin() as session:
            return (await issue_key(session, None, "instance", now_us=now_us())).key
    finally:
        await engine.dispose()


def test_the_readmes_projects_and_keys_block_works_as_printed(stack, tmp_path):
    instance = asyncio.run(_instance_key(stack.database_url))
    output = run_block("Projects and keys", stack, tmp_path, I=instance)
    assert '"id":"acme"' in output
    with stack.api() as api:
        listed = api.get(
            "/v1/projects/acme/keys", headers={"Authorization": f"Bearer {instance}"}
        ).json()["keys"]
    assert [(k["scope"], k["name"], k["revoked_at"] is None) for k in listed] == [
        ("admin", "acme ops", True),
        ("write", "website", False),
    ]


def test_the_readmes_share_link_block_works_as_printed(stack, tmp_path):
    funnel_id = _funnel(stack)
    output = run_block("Share links", stack, tmp_path, ID=funnel_id)
    assert output.rstrip().endswith("410"), output
    svg = ET.fromstring((tmp_path / "funnel.svg").read_text())
    assert "pricing to signup" in "".join(svg.itertext())
