"""The README's quickstart block (after `<!-- quickstart -->`) runs as printed against a fresh
`funnel run`, only its ports changed: every command must succeed, the report it prints after
the wait recipe counts the events it sent, and the receiver printed a verified webhook."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from standardwebhooks.webhooks import Webhook

from services.devstack import free_port, wait_for_port
from tests.e2e.test_dev_stack import free_ports, run_env, started, stop

README = Path(__file__).parent.parent.parent / "README.md"


def quickstart(ports: dict[str, int], receiver_port: int) -> str:
    """The README's quickstart block, pointed at these ports and this checkout's `funnel`."""
    block = re.search(r"<!-- quickstart -->\n```sh\n(.*?)```", README.read_text(), re.DOTALL)
    assert block is not None, "README.md has no ```sh block right after <!-- quickstart -->"
    script = block.group(1).replace("localhost:8001", f"localhost:{ports['ingest']}")
    script = script.replace("localhost:8003", f"localhost:{ports['api']}")
    script = script.replace("127.0.0.1:9000", f"127.0.0.1:{receiver_port}")
    script = script.replace("--port 9000", f"--port {receiver_port}")
    return script.replace(".venv/bin/funnel", f"{sys.executable} -m services.cli")


def documents(output: str) -> list[object]:
    """The JSON documents the block printed (curl adds no newline after a body)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := output.find("{", at)) != -1:
        document, at = decoder.raw_decode(output, at)
        found.append(document)
    return found


def test_the_readmes_quickstart_runs_as_printed_and_counts_what_it_sent(tmp_path):
    ports = free_ports()
    process, _ = started(tmp_path, ports)
    try:
        began = time.monotonic()
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", quickstart(ports, free_port())],
            env=run_env(ports),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        took = time.monotonic() - began
        logs = "".join(p.read_text() for p in sorted((tmp_path / "var").glob("*.log")))
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{logs}"
        printed = [d for d in documents(done.stdout) if isinstance(d, dict)]
        reports = [d for d in printed if "computed_at" in d]
        assert len(reports) == 3, done.stdout
        ranged, totals, computed = reports
        assert [s["persons"] for s in ranged["steps"]] == [2, 1, 1], ranged
        assert [s["persons"] for s in computed["steps"]] == [2, 1, 1], computed
        assert [s["persons"] for s in totals["steps"]] == [2, 1, 1], totals
        webhooks = [d for d in printed if "verified" in d]
        assert [(w["verified"], w["type"]) for w in webhooks] == [(True, "funnel.converted")]
        assert webhooks[0]["data"]["step"] == {"step": 3, "name": "order"}, webhooks
        print(f"quickstart block took {took:.1f} s")  # noqa: T201 - the run time, for -s
    finally:
        stop(process)


def test_funnel_receive_prints_a_signed_delivery_and_refuses_a_forged_one(tmp_path):
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "receive", "--port", str(port), "--secret", secret],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, 30)
        body = json.dumps({"type": "funnel.converted", "timestamp": "now", "data": {"n": 1}})
        now = datetime.now(UTC)
        signature = Webhook(secret).sign("msg_1", now, body)
        headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(now.timestamp())),
            "content-type": "application/json",
        }
        url = f"http://127.0.0.1:{port}/hooks/funnel"
        signed = httpx.post(url, content=body, headers={**headers, "webhook-signature": signature})
        forged = httpx.post(url, content=body, headers={**headers, "webhook-signature": "v1,AAAA"})
        assert (signed.status_code, forged.status_code) == (200, 401)
    finally:
        receiver.terminate()
        out, _ = receiver.communicate(timeout=30)
    printed = [json.loads(line) for line in out.splitlines()]
    assert [(p["verified"], p.get("id"), p.get("data")) for p in printed] == [
        (True, "msg_1", {"n": 1}),
        (False, None, None),
    ]
