"""`funnel run` (what `make run` starts) as a user runs it, and as it ends.

Its broker keeps nothing, its SQLite database keeps everything: a second run over the same
./var must still count the new broker's events from its first record. Ctrl-C, SIGTERM and
SIGHUP (the terminal closed) stop every process it started; so does its own SIGKILL; a second
run while the first holds the ports, or a service that dies, ends with a non-zero exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from services.devstack import free_port, wait_for_port
from tests.stack import eventually

RANGE = {"from": "2026-01-01", "to": "2026-02-01"}


BANNER = "Funnel Tracker is running"
RUN = [sys.executable, "-m", "services.cli", "run"]


def free_ports() -> dict[str, int]:
    return {"ingest": free_port(), "api": free_port(), "aggregator": free_port()}


def run_env(ports: dict[str, int]) -> dict[str, str]:
    env = {
        **os.environ,
        "INGEST_PORT": str(ports["ingest"]),
        "API_PORT": str(ports["api"]),
        "AGGREGATOR_METRICS_PORT": str(ports["aggregator"]),
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("DATABASE_URL", None)
    return env


def start(folder, ports: dict[str, int]) -> subprocess.Popen[bytes]:
    with open(folder / "run.log", "ab") as log:
        process = subprocess.Popen(
            RUN,
            cwd=folder,
            env=run_env(ports),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_port(ports["api"], 60)
    wait_for_port(ports["ingest"], 60)
    return process


def started(folder, ports: dict[str, int]) -> tuple[subprocess.Popen[bytes], dict[int, str]]:
    """A `funnel run` that printed its banner, and its children: pid -> command line."""
    process = start(folder, ports)
    eventually(
        lambda: (folder / "run.log").read_text(),
        lambda text: BANNER in text or process.poll() is not None,
        timeout_s=60,
        what="the banner",
    )
    assert process.poll() is None, (folder / "run.log").read_text()
    return process, children_of(process.pid)


def children_of(pid: int) -> dict[int, str]:
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found[int(stat.parent.name)] = command
    return found


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie nobody has reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def broker_port(folder) -> int:
    line = next(x for x in (folder / "run.log").read_text().splitlines() if "broker " in x)
    return int(line.rsplit(":", 1)[1])


def assert_all_gone(children: dict[int, str], ports: list[int]) -> None:
    eventually(
        lambda: ([c for p, c in children.items() if alive(p)], [p for p in ports if listening(p)]),
        lambda left: left == ([], []),
        timeout_s=30,
        what="every child stopped and every port free",
    )


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


def test_a_second_run_exits_non_zero_before_the_banner_and_sighup_stops_the_first(tmp_path):
    ports = free_ports()
    first, children = started(tmp_path, ports)
    try:
        assert len(children) == 4, children  # the broker and the three services
        second = subprocess.run(
            RUN, cwd=tmp_path, env=run_env(ports), capture_output=True, timeout=60, check=False
        )
        said = (second.stdout + second.stderr).decode()
        assert second.returncode == 2, said
        assert BANNER not in said
        assert "already in use" in said
        assert all(str(port) in said for port in ports.values()), said
        assert first.poll() is None, "the second run harmed the first"
        assert [name for name, port in ports.items() if not listening(port)] == []
        first.send_signal(signal.SIGHUP)
        assert first.wait(60) == 0
    finally:
        if first.poll() is None:
            stop(first)
    assert_all_gone(children, [*ports.values(), broker_port(tmp_path)])


def test_a_service_that_dies_stops_the_stack_non_zero_with_its_last_log_lines(tmp_path):
    ports = free_ports()
    process, children = started(tmp_path, ports)
    try:
        aggregator = next(p for p, c in children.items() if c.endswith("services.cli aggregator "))
        os.kill(aggregator, signal.SIGKILL)
        assert process.wait(60) == 1
    finally:
        if process.poll() is None:
            stop(process)
    said = (tmp_path / "run.log").read_text()
    assert f"aggregator exited with code {-signal.SIGKILL}" in said
    last = (tmp_path / "var/aggregator.log").read_text().splitlines()[-1]
    assert last in said.split("aggregator exited with code")[1]
    assert_all_gone(children, [*ports.values(), broker_port(tmp_path)])


def test_children_stop_when_funnel_run_itself_is_killed_hard(tmp_path):
    ports = free_ports()
    process, children = started(tmp_path, ports)
    process.kill()  # SIGKILL: no handler runs, the kernel tells the children
    process.wait(30)
    assert_all_gone(children, [*ports.values(), broker_port(tmp_path)])
