"""The whole stack as real processes, for end-to-end tests and benchmarks."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from services.devstack import (
    EmbeddedBroker,
    create_topics,
    free_port,
    spawn,
    stop_process,
    wait_for_port,
)
from shared.db import create_engine, migrate, sessionmaker
from tests.helpers import create_key

T = TypeVar("T")


async def _keys(url: str) -> dict[str, str]:
    engine = create_engine(url)
    try:
        async with sessionmaker(engine).begin() as session:
            return {s: await create_key(session, "e2e", s) for s in ("write", "admin")}
    finally:
        await engine.dispose()


class Stack:
    def __init__(
        self,
        folder: Path,
        database_url: str,
        partitions: int = 4,
        services: tuple[str, ...] = ("ingest", "api", "aggregator"),
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.wanted = services
        self.extra_env = extra_env or {}
        self.folder = folder
        self.database_url = database_url
        self.partitions = partitions
        self.broker = EmbeddedBroker(log_path=folder / "broker.log")
        self.ports = {"ingest": free_port(), "api": free_port()}
        self.aggregators: list[subprocess.Popen[bytes]] = []
        self.aggregator_metrics_ports: list[int] = []
        self.services: dict[str, subprocess.Popen[bytes]] = {}
        self.keys: dict[str, str] = {}

    @property
    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "INGEST_PORT": str(self.ports["ingest"]),
            "INGEST_PRODUCE_TIMEOUT_S": "5",
            "API_PORT": str(self.ports["api"]),
            "AGGREGATOR_SESSION_TIMEOUT_MS": "6000",
            "AGGREGATOR_HEARTBEAT_INTERVAL_MS": "1000",
            "LOG_LEVEL": "INFO",
            "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",  # the tests' receivers are local
            "AGGREGATOR_TIMER_INTERVAL_S": "0.2",
            "AGGREGATOR_WEBHOOK_INTERVAL_S": "0.2",
            **self.extra_env,
        }

    def start(self) -> Stack:
        self.broker.start()
        create_topics(self.broker.bootstrap, self.partitions)
        migrate(self.database_url)
        self.keys = asyncio.run(_keys(self.database_url))
        http = [name for name in ("ingest", "api") if name in self.wanted]
        for name in http:
            self.services[name] = spawn([name], self.env, self.folder / f"{name}.log")
        if "aggregator" in self.wanted:
            self.start_aggregator()
        for name in http:
            wait_for_port(self.ports[name], 30)
        return self

    def start_aggregator(self) -> subprocess.Popen[bytes]:
        n = len(self.aggregators)
        port = free_port()
        self.aggregator_metrics_ports.append(port)
        env = {**self.env, "AGGREGATOR_METRICS_PORT": str(port)}
        process = spawn(["aggregator"], env, self.folder / f"aggregator-{n}.log")
        self.aggregators.append(process)
        return process

    def stop(self) -> None:
        for process in [*self.services.values(), *self.aggregators]:
            stop_process(process, grace_s=5)
        self.broker.stop()

    def ingest(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.ports['ingest']}",
            auth=(self.keys["write"], ""),
            timeout=30,
        )

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.ports['api']}",
            headers={"Authorization": f"Bearer {self.keys['admin']}"},
            timeout=30,
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.folder.glob("*.log"))
        )


def eventually(check: Callable[[], T], ok: Callable[[T], bool], timeout_s: float, what: str) -> T:
    """Poll ``check`` until ``ok`` holds; fail with the last value seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_s}s; last value {value!r}")
        time.sleep(0.25)


def report_persons(api: httpx.Client, funnel_id: str, **params: Any) -> list[int]:
    body = api.get(f"/v1/funnels/{funnel_id}/report", params=params).json()
    return [s["persons"] for s in body["steps"]]


def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of a topic, from the beginning to the current end (no consumer group)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        found: list[Any] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end")
            for batch in consumer.poll(timeout_ms=500).values():
                found.extend(batch)
        return found
    finally:
        consumer.close()
