"""The ``funnel`` command: run the stack or one service, migrate, manage keys and topics."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from shared.logging_setup import setup_logging

VAR = Path("var")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="funnel", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="the whole stack for development (embedded broker, SQLite)")
    commands.add_parser("ingest", help="the ingest HTTP service")
    commands.add_parser("aggregator", help="the aggregator (Kafka consumer)")
    commands.add_parser("api", help="the query API HTTP service")
    commands.add_parser("migrate", help="migrate the database to the newest schema")
    topics = commands.add_parser("topics", help="create the Kafka topics")
    topics.add_argument("--partitions", type=int, default=8)
    offsets = commands.add_parser(
        "offsets", help="forget the aggregator's stored Kafka offsets (after recreating topics)"
    )
    offsets.add_argument("action", choices=["reset"])
    keys = commands.add_parser("keys", help="API keys")
    keys.add_argument("action", choices=["create"])
    keys.add_argument("--project", required=True)
    keys.add_argument("--scope", choices=["write", "read", "admin"], default="write")
    args = parser.parse_args(argv)
    setup_logging(os.environ.get("LOG_LEVEL", "INFO"))
    handler: dict[str, Any] = {
        "run": run_stack,
        "ingest": serve_ingest,
        "api": serve_api,
        "aggregator": run_aggregator,
        "migrate": migrate,
        "topics": lambda: create_topics(args.partitions),
        "keys": lambda: create_key(args.project, args.scope),
        "offsets": reset_offsets,
    }
    return int(handler[args.command]() or 0)


def migrate() -> int:
    from shared.config import CommonSettings
    from shared.db import migrate as upgrade

    upgrade(CommonSettings().database_url)
    return 0


def create_topics(partitions: int) -> int:
    from services.devstack import create_topics as create
    from shared.config import CommonSettings

    create(CommonSettings().kafka_bootstrap_servers, partitions)
    return 0


def reset_offsets() -> int:
    """Read every partition from its start again; stored events keep duplicates out."""
    from shared.config import CommonSettings

    asyncio.run(_forget_offsets(CommonSettings().database_url))
    return 0


def create_key(project: str, scope: Any) -> int:
    print(asyncio.run(_new_key(project, scope)))
    return 0


async def _new_key(project: str, scope: Any) -> str:
    from shared.config import CommonSettings
    from shared.db import create_engine, sessionmaker
    from shared.keys import create_key as create

    engine = create_engine(CommonSettings().database_url)
    try:
        async with sessionmaker(engine).begin() as session:
            return await create(session, project, scope)
    finally:
        await engine.dispose()


def serve_ingest() -> int:
    import uvicorn

    from services.ingest.server import uvicorn_options
    from services.ingest.settings import IngestSettings

    settings = IngestSettings()
    uvicorn.run(
        "services.ingest.app:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers if settings.workers > 1 else None,
        log_level="warning",
        access_log=False,
        **uvicorn_options(settings),
    )
    return 0


def serve_api() -> int:
    import uvicorn

    from services.api.app import create_app
    from services.api.settings import ApiSettings

    settings = ApiSettings()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
    )
    return 0


def run_aggregator() -> int:
    from services.aggregator.service import run, serve_metrics
    from services.aggregator.settings import AggregatorSettings

    settings = AggregatorSettings()
    serve_metrics(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run(settings, stop)

    asyncio.run(main())
    return 0


def run_stack() -> int:
    """Everything on one machine: embedded broker, migrated database, the three services."""
    from services.devstack import EmbeddedBroker, create_topics, spawn, stop_process, wait_for_port
    from shared.config import CommonSettings
    from shared.db import migrate as upgrade

    VAR.mkdir(exist_ok=True)
    broker = None
    if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
        broker = EmbeddedBroker(log_path=VAR / "broker.log").start()
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
    common = CommonSettings()
    children: dict[str, Any] = {}
    stopping = False

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        upgrade(common.database_url)
        if broker is not None:
            # A new memory-only broker starts with empty logs: offsets stored for the last
            # one would skip its first records. Stored events keep duplicates out.
            asyncio.run(_forget_offsets(common.database_url))
        create_topics(common.kafka_bootstrap_servers, partitions=8)
        write_key, admin_key = asyncio.run(_dev_keys())
        env = {"KAFKA_BOOTSTRAP_SERVERS": common.kafka_bootstrap_servers}
        for name in ("aggregator", "ingest", "api"):
            children[name] = spawn([name], env, VAR / f"{name}.log")
        ports = _ports()
        for name in ("ingest", "api", "aggregator"):
            wait_for_port(ports[name], 30)
        _banner(common, ports, write_key, admin_key)
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    print(f"{name} exited with {child.returncode}; see var/{name}.log")
                    stopping = True
            time.sleep(0.2)
    finally:
        for child in children.values():
            stop_process(child)
        if broker is not None:
            broker.stop()
        print("stopped")
    return 0


async def _forget_offsets(url: str) -> None:
    from shared.db import create_engine, sessionmaker
    from shared.tables import consumer_offsets

    engine = create_engine(url)
    try:
        async with sessionmaker(engine).begin() as session:
            await session.execute(consumer_offsets.delete())
    finally:
        await engine.dispose()


def _ports() -> dict[str, int]:
    from services.aggregator.settings import AggregatorSettings
    from services.api.settings import ApiSettings
    from services.ingest.settings import IngestSettings

    return {
        "ingest": IngestSettings().port,
        "api": ApiSettings().port,
        "aggregator": AggregatorSettings().metrics_port,
    }


async def _dev_keys() -> tuple[str, str]:
    """The development project's keys, kept in var/dev-keys.json so that restarts reuse them."""
    path = VAR / "dev-keys.json"
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        saved = json.loads(path.read_text())
        from shared.config import CommonSettings
        from shared.db import create_engine, sessionmaker
        from shared.keys import find_key

        engine = create_engine(CommonSettings().database_url)
        try:
            async with sessionmaker(engine)() as session:
                if await find_key(session, saved["write"]) and await find_key(
                    session, saved["admin"]
                ):
                    return saved["write"], saved["admin"]
        finally:
            await engine.dispose()
    write_key, admin_key = await _new_key("default", "write"), await _new_key("default", "admin")
    path.write_text(json.dumps({"write": write_key, "admin": admin_key}))
    path.chmod(0o600)
    return write_key, admin_key


def _banner(common: Any, ports: dict[str, int], write_key: str, admin_key: str) -> None:
    ingest, api = f"http://127.0.0.1:{ports['ingest']}", f"http://127.0.0.1:{ports['api']}"
    print(
        f"""
Funnel Tracker is running (Ctrl-C stops everything).
  broker      {common.kafka_bootstrap_servers}
  database    {common.database_url}
  ingest      {ingest}   (docs {ingest}/docs, metrics {ingest}/metrics)
  api         {api}   (docs {api}/docs, metrics {api}/metrics)
  aggregator  metrics http://127.0.0.1:{ports["aggregator"]}/metrics
  project     default   write key {write_key}   admin key {admin_key}

Try it:
  curl -s -X POST {api}/v1/funnels -H 'Authorization: Bearer {admin_key}' \\
    -H 'Content-Type: application/json' \\
    -d '{{"name": "signup", "steps": [{{"event": "visit"}}, {{"event": "signup"}}]}}'
  curl -s -X POST {ingest}/v1/events -u '{write_key}:' -H 'Content-Type: application/json' \\
    -d '{{"batch": [{{"user_id": "u1", "event": "visit"}},
                    {{"user_id": "u1", "event": "signup"}}]}}'
  curl -s {api}/v1/funnels -H 'Authorization: Bearer {admin_key}'
  curl -s '{api}/v1/funnels/FUNNEL_ID/report' -H 'Authorization: Bearer {admin_key}'
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
