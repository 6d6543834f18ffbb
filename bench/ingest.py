"""Ingest throughput: POST /v1/batch into Kafka (acks=all) vs a raw kafka-python producer.

Both send the same ~300-byte events to the same embedded broker in the same run; the raw
producer is the ceiling. Also: p50/p99 request latency and single-event /v1/track rate.
"""

from __future__ import annotations

import asyncio
import base64
import random
import statistics
import tempfile
import time
from pathlib import Path

import orjson
from kafka import KafkaProducer

from bench.common import percentile, realistic_event, record
from services.ingest.segment import to_event
from services.ingest.validation import Limits, Problem, encode, validate
from shared.events import EVENTS_TOPIC, SCHEMA_HEADER
from shared.retention import ingest_horizon
from tests.databases import migrated
from tests.stack import Stack

BATCH = 100


def raw_producer_rate(bootstrap: str, events: list[dict], rounds: int) -> float:
    """The ceiling: the canonical records a request would publish, straight from kafka-python."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    records = []
    for i, raw in enumerate(events):
        event, _ = validate(to_event(raw, "track"), i)
        assert event is not None
        encoded = encode(event, i, "bench", now, Limits(32768, ingest_horizon(400), 400))
        assert not isinstance(encoded, Problem)
        records.append((encoded[0].key, encoded[1]))
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        batch_size=65_536,
    )
    started = time.perf_counter()
    for _ in range(rounds):
        futures = [
            producer.send(EVENTS_TOPIC, key=k, value=v, headers=[(SCHEMA_HEADER, b"1")])
            for k, v in records
        ]
        producer.flush()
        assert all(f.succeeded() for f in futures)
    elapsed = time.perf_counter() - started
    producer.close()
    return len(records) * rounds / elapsed


class Connection:
    """A minimal HTTP/1.1 keep-alive client: far cheaper per request than a full client, so
    that the load generator, sharing the machine's two cores, takes less from the server."""

    def __init__(self, port: int, key: str) -> None:
        self._port = port
        self._auth = base64.b64encode(f"{key}:".encode()).decode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)
        assert self._reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Basic {self._auth}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode() + body)
        status_line = await self._reader.readline()
        length = 0
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self._reader.readexactly(length)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


async def drive(
    port: int, key: str, path: str, bodies: list[bytes], workers: int
) -> tuple[float, list[float]]:
    """Send every body with ``workers`` connections; return (seconds, request latencies)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    latencies: list[float] = []

    async def worker() -> None:
        connection = Connection(port, key)
        try:
            while not queue.empty():
                body = queue.get_nowait()
                t = time.perf_counter()
                status, answer = await connection.post(path, body)
                latencies.append(time.perf_counter() - t)
                assert status == 200, answer
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - started, latencies


def measure(events: list[dict], rounds: int, workers: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    with migrated("sqlite", folder) as url:
        stack = Stack(folder, url, services=("ingest",), extra_env={"INGEST_WORKERS": str(workers)})
        stack.start()
        try:
            port, key = stack.ports["ingest"], stack.keys["write"]
            batches = [
                orjson.dumps({"batch": [{**e, "type": "track"} for e in events[i : i + BATCH]]})
                for i in range(0, len(events), BATCH)
            ]
            singles = [orjson.dumps(e) for e in events[:3000]]
            # Warm both paths (connections, topic metadata) before measuring.
            asyncio.run(drive(port, key, "/v1/batch", batches[:20], 8))
            raw_producer_rate(stack.broker.bootstrap, events[:1000], 1)
            # Alternate the two, round by round, so that a slow spell of this shared machine
            # falls on both; compare the medians.
            ceilings, rates, latencies = [], [], []
            for _ in range(rounds):
                ceilings.append(raw_producer_rate(stack.broker.bootstrap, events, 1))
                seconds, found = asyncio.run(drive(port, key, "/v1/batch", batches, 8))
                rates.append(len(events) / seconds)
                latencies += found
            single_seconds, _ = asyncio.run(drive(port, key, "/v1/track", singles, 16))
        finally:
            stack.stop()
    ceiling, rate = statistics.median(ceilings), statistics.median(rates)
    return {
        "raw kafka-python producer, events/s": ceiling,
        "POST /v1/batch (100/request), events/s": rate,
        "ratio to ceiling (target >= 0.70)": rate / ceiling,
        "batch request latency p50, ms": percentile(latencies, 0.50) * 1000,
        "batch request latency p99, ms": percentile(latencies, 0.99) * 1000,
        "POST /v1/track (1/request, 16 clients), events/s": len(singles) / single_seconds,
        "rounds (each: 10,000 events both ways)": rounds,
    }


def main(quick: bool = False) -> None:
    rng = random.Random(1)
    events = [realistic_event(rng, i) for i in range(10_000)]
    rounds = 1 if quick else 7
    record("ingest, 1 worker process", measure(events, rounds, workers=1))
    record("ingest, 2 worker processes", measure(events, rounds, workers=2))


if __name__ == "__main__":
    main()
