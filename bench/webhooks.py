"""Webhook delivery: 100,000 due triggers to a local receiver vs plain httpx posts (ceiling).

Both send the same signed payloads to the same receiver (uvicorn, one process) with the
same concurrency; ours also claims, records every attempt and updates every delivery in
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.common import record
from services.aggregator.delivery import DeliveryWorker, envelope, sign
from services.aggregator.model import Claimed
from services.aggregator.sender import HttpSender
from services.devstack import free_port, stop_process, wait_for_port
from shared.clock import SystemClock, now_us
from shared.db import create_engine, sessionmaker
from shared.netguard import parse_networks
from shared.tables import webhook_deliveries, webhook_endpoints, webhook_messages
from tests.databases import migrated
from tests.helpers import create_key

SECRET = "whsec_" + "QmVuY2htYXJrU2VjcmV0S2V5MTIzNDU2"
BATCH = 50


def payload(i: int) -> dict:
    return {
        "project": "bench",
        "funnel": {"id": "f", "name": "checkout"},
        "rule": {"name": "7-day", "from_step": 1, "goal_step": 5, "occurrence": 0},
        "person_id": f"person-{i:07d}",
        "entry_time": "2026-11-01T10:00:00.000000Z",
        "current_step": {"step": 2, "name": "product view"},
        "entry_properties": {"utm_source": "newsletter", "path": "/pricing"},
        "value": 129.0,
    }


async def seed(url: str, receiver: str, n: int) -> None:
    engine = create_engine(url)
    stamp = now_us()
    async with sessionmaker(engine).begin() as session:
        await create_key(session, "bench", "admin")
        await session.execute(
            webhook_endpoints.insert().values(
                id="ep",
                project_id="bench",
                url=receiver,
                event_types=["remarketing.due"],
                secret=SECRET,
                created_at_us=stamp,
                updated_at_us=stamp,
            )
        )
        for start in range(0, n, 5000):
            ids = range(start, min(start + 5000, n))
            await session.execute(
                webhook_messages.insert(),
                [
                    {
                        "id": f"msg_{i}",
                        "project_id": "bench",
                        "type": "remarketing.due",
                        "funnel_id": None,
                        "payload": payload(i),
                        "created_at_us": stamp,
                    }
                    for i in ids
                ],
            )
            await session.execute(
                webhook_deliveries.insert(),
                [
                    {
                        "id": str(uuid.uuid4()),
                        "message_id": f"msg_{i}",
                        "endpoint_id": "ep",
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_us": stamp,
                        "created_at_us": stamp,
                        "updated_at_us": stamp,
                    }
                    for i in ids
                ],
            )
    await engine.dispose()


async def ceiling(receiver: str, n: int) -> float:
    """Plain httpx: the same signed bodies, BATCH at a time, nothing recorded."""
    claims = [
        Claimed(
            f"d{i}",
            "ep",
            receiver,
            (SECRET,),
            f"msg_{i}",
            "remarketing.due",
            payload(i),
            now_us(),
            0,
        )
        for i in range(n)
    ]
    async with httpx.AsyncClient(timeout=15, limits=httpx.Limits(max_connections=64)) as client:
        started = time.perf_counter()
        for i in range(0, n, BATCH):

            async def post(c: Claimed) -> None:
                from datetime import UTC, datetime

                body = envelope(c)
                r = await client.post(c.url, headers=sign(c, body, datetime.now(UTC)), content=body)
                assert r.status_code == 204

            await asyncio.gather(*(post(c) for c in claims[i : i + BATCH]))
        return n / (time.perf_counter() - started)


async def ours(url: str, n: int) -> float:
    engine = create_engine(url)
    sender = HttpSender(allowed_networks=parse_networks("127.0.0.0/8"))
    worker = DeliveryWorker(sessionmaker(engine), sender, SystemClock(), batch=BATCH)
    started = time.perf_counter()
    done = 0
    while (sent := await worker.run_once()) > 0:
        done += sent
    elapsed = time.perf_counter() - started
    await sender.close()
    await engine.dispose()
    assert done == n, f"delivered {done} of {n}"
    return n / elapsed


def main(quick: bool = False) -> None:
    n = 10_000 if quick else 100_000
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.receiver_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        start_new_session=True,
    )
    receiver = f"http://127.0.0.1:{port}/hook"
    try:
        wait_for_port(port, 20)
        with migrated("postgresql", Path(tempfile.mkdtemp())) as url:
            asyncio.run(seed(url, receiver, n))
            plain = asyncio.run(ceiling(receiver, n))
            rate = asyncio.run(ours(url, n))
    finally:
        stop_process(server)
    record(
        "webhooks (PostgreSQL outbox)",
        {
            "deliveries": n,
            "plain httpx posts, per s (ceiling)": plain,
            "outbox deliveries, per s": rate,
            "ratio to ceiling (target >= 0.50)": rate / plain,
        },
    )
