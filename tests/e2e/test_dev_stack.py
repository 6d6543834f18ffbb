"""`funnel run` (what `make run` starts) as a user runs it: twice over the same ./var.

Its broker keeps nothing, its SQLite database keeps everything: the second run must still
count the new broker's events from its first record, and Ctrl-C/SIGTERM must stop every
process it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys

import httpx

from services.devstack import free_port, wait_for_port
from tests.stack import eventually

RANGE = {"from": "2026-01-01", "to": "2026-02-01"}


def start(folder, ports: dict[str, int]) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "INGEST_PORT": str(ports["ingest"]),
        "API_PORT": str(ports["api"]),
        "AGGREGATOR_METRICS_PORT": str(ports["aggregator"]),
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("DATABASE_URL", None)
    with open(folder / "run.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run"],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_port(ports["api"], 60)
    wait_for_port(ports["ingest"], 60)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def persons(api: httpx.Client, funnel_id: str) -> list[int]:
    body = api.get(f"/v1/funnels/{funnel_id}/report", params=RANGE).json()
    return [s["persons"] for s in body["steps"]]


def test_funnel_run_twice_over_the_same_database_counts_every_event(tmp_path):
    ports = {"ingest": free_port(), "api": free_port(), "aggregator": free_port()}
    funnel_id = None
    for run, people in enumerate((range(0, 30), range(30, 40))):
        process = start(tmp_path, ports)
        stack = contextlib.ExitStack()
        try:
            keys = json.loads((tmp_path / "var/dev-keys.json").read_text())
            api = httpx.Client(
                base_url=f"http://127.0.0.1:{ports['api']}",
                headers={"Authorization": f"Bearer {keys['admin']}"},
            )
            stack.callback(api.close)
            if funnel_id is None:
                funnel = {"name": "dev", "steps": [{"event": "visit"}, {"event": "buy"}]}
                funnel_id = api.post("/v1/funnels", json=funnel).json()["id"]
            batch = [
                {"user_id": f"u{i}", "event": "visit", "timestamp": "2026-01-05T10:00:00Z"}
                for i in people
            ]
            r = httpx.post(
                f"http://127.0.0.1:{ports['ingest']}/v1/events",
                json={"batch": batch},
                auth=(keys["write"], ""),
            )
            assert r.status_code == 202, r.text
            expected = [people.stop, 0]
            eventually(
                lambda api=api, fid=funnel_id: persons(api, fid),
                lambda counts, want=expected: counts == want,
                timeout_s=60,
                what=f"run {run + 1}",
            )
        finally:
            stack.close()
            stop(process)
        left = [name for name, port in ports.items() if listening(port)]
        assert left == [], f"funnel run left {left} running"
