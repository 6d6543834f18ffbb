"""Report latency: a 5-step funnel, 1,000,000 persons, 90 days of entries, breakdown by a
10-valued channel, on PostgreSQL; vs the obvious SQL funnel query over the raw events table.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import text

from bench.common import percentile, record
from services.aggregator.processor import Processor
from services.api.app import create_app
from services.api.repository import funnels as api_funnels
from services.api.settings import ApiSettings
from shared.clock import now_us
from shared.db import create_engine, sessionmaker
from shared.tables import events, funnel_entries, funnel_touches
from tests.databases import migrated
from tests.helpers import canonical, create_key, records
from tests.workload import CHANNELS

STEPS = ["visit", "signup", "activate", "pay", "renew"]
DAY_US = 86_400 * 1_000_000
WINDOW_US = 7 * DAY_US
START_US = 1_767_225_600 * 1_000_000  # 2026-01-01


def person_rows(
    i: int, t0: int, funnel_id: str, rng: random.Random
) -> tuple[dict, list[dict], list[dict]]:
    person = f"p{i:07d}"
    reached = 1
    while reached < len(STEPS) and rng.random() < 0.55:
        reached += 1
    times = [t0 + k * rng.randrange(1, DAY_US // 4) for k in range(reached)]
    channel = rng.choice(CHANNELS)
    entry = {
        "funnel_id": funnel_id,
        "person_id": person,
        "t0_us": t0,
        "reached": reached,
        "step_times": times,
        "disqualified": False,
        "step_values": {"channel": [channel] * reached},
    }
    touches = [
        {
            "funnel_id": funnel_id,
            "person_id": person,
            "ts_us": t,
            "seq": 0,
            "values": {"channel": channel},
        }
        for t in times
    ]
    raw = [
        {
            "project_id": "bench",
            "event_id": f"{person}-{k}",
            "person_id": person,
            "name": STEPS[k],
            "ts_us": t,
            "received_at_us": t,
            "properties": {"channel": channel},
            "context": {},
        }
        for k, t in enumerate(times)
    ]
    return entry, touches, raw


async def seed(url: str, persons: int) -> tuple[str, str]:
    engine = create_engine(url)
    sessions = sessionmaker(engine)
    async with sessions.begin() as session:
        key = await create_key(session, "bench", "admin")
        doc = {
            "name": "bench",
            "steps": [{"event": s, "where": []} for s in STEPS],
            "window_seconds": 7 * 86_400,
            "order": "ordered",
            "exclusions": [],
            "breakdowns": ["channel"],
            "value_property": None,
        }
        funnel_id = await api_funnels.create_funnel(session, "bench", doc, now_us=now_us())
        await session.execute(
            text("UPDATE funnels SET backfill_done = true WHERE id = :id"), {"id": funnel_id}
        )
    rng = random.Random(3)
    # Persons in the order they entered, so that rows lie in the tables roughly in time order,
    # as an aggregator writes them (in person order, some plans read them much faster).
    starts = sorted((START_US + rng.randrange(90 * DAY_US), i) for i in range(persons))
    for chunk in range(0, persons, 20_000):
        rows = [person_rows(i, t0, funnel_id, rng) for t0, i in starts[chunk : chunk + 20_000]]
        async with sessions.begin() as session:
            await session.execute(funnel_entries.insert(), [r[0] for r in rows])
            await session.execute(funnel_touches.insert(), [t for r in rows for t in r[1]])
            await session.execute(events.insert(), [e for r in rows for e in r[2]])
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE"))
        await conn.commit()
    await engine.dispose()
    return key, funnel_id


RAW_SQL = """
WITH s1 AS (
  SELECT DISTINCT ON (person_id) person_id, ts_us AS t1, properties->>'channel' AS channel
  FROM events WHERE project_id = 'bench' AND name = 'visit' AND ts_us >= :lo AND ts_us < :hi
  ORDER BY person_id, ts_us
), s2 AS (
  SELECT s1.person_id, min(e.ts_us) AS t FROM s1 JOIN events e ON e.project_id = 'bench'
   AND e.person_id = s1.person_id AND e.name = 'signup'
   AND e.ts_us >= s1.t1 AND e.ts_us <= s1.t1 + :w
  GROUP BY s1.person_id
), s3 AS (
  SELECT s2.person_id, min(e.ts_us) AS t FROM s2 JOIN s1 USING (person_id) JOIN events e
   ON e.project_id = 'bench' AND e.person_id = s2.person_id AND e.name = 'activate'
   AND e.ts_us >= s2.t AND e.ts_us <= s1.t1 + :w GROUP BY s2.person_id
), s4 AS (
  SELECT s3.person_id, min(e.ts_us) AS t FROM s3 JOIN s1 USING (person_id) JOIN events e
   ON e.project_id = 'bench' AND e.person_id = s3.person_id AND e.name = 'pay'
   AND e.ts_us >= s3.t AND e.ts_us <= s1.t1 + :w GROUP BY s3.person_id
), s5 AS (
  SELECT s4.person_id, min(e.ts_us) AS t FROM s4 JOIN s1 USING (person_id) JOIN events e
   ON e.project_id = 'bench' AND e.person_id = s4.person_id AND e.name = 'renew'
   AND e.ts_us >= s4.t AND e.ts_us <= s1.t1 + :w GROUP BY s4.person_id
)
SELECT s1.channel, count(*), count(s2.person_id), count(s3.person_id), count(s4.person_id),
       count(s5.person_id)
FROM s1 LEFT JOIN s2 USING (person_id) LEFT JOIN s3 USING (person_id)
 LEFT JOIN s4 USING (person_id) LEFT JOIN s5 USING (person_id)
GROUP BY s1.channel
"""


async def raw_latencies(url: str, runs: int) -> list[float]:
    engine = create_engine(url)
    found = []
    async with engine.connect() as conn:
        for _ in range(runs):
            started = time.perf_counter()
            await conn.execute(
                text(RAW_SQL), {"lo": START_US, "hi": START_US + 90 * DAY_US, "w": WINDOW_US}
            )
            found.append(time.perf_counter() - started)
    await engine.dispose()
    return found


@contextlib.asynccontextmanager
async def api_client(url: str, key: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API app in-process (its lifespan run), with a client holding an admin key."""
    app = create_app(ApiSettings(database_url=url, gauge_refresh_s=3600))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://api",
            timeout=600,
            headers={"Authorization": f"Bearer {key}"},
        ) as client,
    ):
        yield client


async def our_latencies(
    url: str, key: str, funnel_id: str, runs: int
) -> tuple[list[float], list[float]]:
    """(computed, cached) request latencies: computed ones ask for ``no-cache``."""
    computed, cached = [], []
    async with api_client(url, key) as client:
        params = {"from": "2026-01-01", "to": "2026-04-01", "breakdown": "channel"}
        path = f"/v1/funnels/{funnel_id}/report"
        for _ in range(runs):
            started = time.perf_counter()
            r = await client.get(path, params=params, headers={"Cache-Control": "no-cache"})
            computed.append(time.perf_counter() - started)
            assert r.status_code == 200, r.text
            assert r.json()["cached"] is False
        for _ in range(200):
            started = time.perf_counter()
            r = await client.get(path, params=params)
            cached.append(time.perf_counter() - started)
            assert r.json()["cached"] is True
    return computed, cached


class Stream:
    """An aggregator committing a batch of new persons' events every 200 ms, in a thread."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.batches = 0

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    async def _run(self) -> None:
        engine = create_engine(self._url)
        processor = Processor(sessionmaker(engine), "bench-stream", horizon_us=lambda: 0)
        expected: dict = {}
        offset, start_s = 0, START_US // 1_000_000
        while not self._stop.is_set():
            batch = []
            for i in range(25):
                person, at = f"s{offset + i:07d}", start_s + (offset + i) * 60
                batch.append(canonical(person, "visit", at, project="bench", channel="ads"))
                batch.append(canonical(person, "signup", at + 30, project="bench"))
            expected.update(await processor.apply(records(batch, 0, offset * 2), expected))
            offset += 25
            self.batches += 1
            await asyncio.sleep(0.2)
        await engine.dispose()


async def streamed_latencies(
    url: str, key: str, funnel_id: str, seconds: float
) -> tuple[list[float], list[float], int]:
    """Report latencies (default headers) while the stored state changes 5 times a second;
    also how old each served report was, and how many batches were committed meanwhile."""
    latencies, ages = [], []
    async with api_client(url, key) as client:
        params = {"from": "2026-01-01", "to": "2026-04-01", "breakdown": "channel"}
        path = f"/v1/funnels/{funnel_id}/report"
        await client.get(path, params=params)  # the report is kept, as a dashboard's is
        with Stream(url) as stream:
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                r = await client.get(path, params=params)
                latencies.append(time.perf_counter() - started)
                assert r.status_code == 200, r.text
                computed_at = datetime.fromisoformat(r.json()["computed_at"])
                ages.append((datetime.now(UTC) - computed_at).total_seconds())
                await asyncio.sleep(0.05)
        batches = stream.batches
    return latencies, ages, batches


def main(quick: bool = False) -> None:
    persons, runs = (100_000, 5) if quick else (1_000_000, 5)
    with migrated("postgresql", Path(tempfile.mkdtemp())) as url:
        key, funnel_id = asyncio.run(seed(url, persons))
        computed, cached = asyncio.run(our_latencies(url, key, funnel_id, runs))
        raw = asyncio.run(raw_latencies(url, 3))
        streamed, ages, batches = asyncio.run(
            streamed_latencies(url, key, funnel_id, 20 if quick else 60)
        )
    raw_p50 = percentile(raw, 0.5)
    record(
        f"report ({persons:,} persons, 90 days, breakdown by channel, PostgreSQL)",
        {
            "computed p50, ms": percentile(computed, 0.5) * 1000,
            "computed p99, ms": percentile(computed, 0.99) * 1000,
            "cached p50, ms": percentile(cached, 0.5) * 1000,
            "cached p99, ms (target <= 50)": percentile(cached, 0.99) * 1000,
            "raw-events SQL p50, ms": raw_p50 * 1000,
            "speed-up, computed (target >= 20)": raw_p50 / percentile(computed, 0.5),
            "speed-up, cached": raw_p50 / percentile(cached, 0.5),
            "under a stream of batches, served p50, ms": percentile(streamed, 0.5) * 1000,
            "under a stream of batches, served p99, ms": percentile(streamed, 0.99) * 1000,
            "under a stream of batches, slowest served, ms": max(streamed) * 1000,
            "under a stream of batches, reads": len(streamed),
            "under a stream of batches, oldest report served, s": max(ages),
            "under a stream of batches, batches committed": batches,
            "speed-up, served under a stream (p50)": raw_p50 / percentile(streamed, 0.5),
        },
    )
