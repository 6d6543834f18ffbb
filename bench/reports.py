"""Report latency: a 5-step funnel, 1,000,000 persons, 90 days of entries, breakdown by a
10-valued channel, on PostgreSQL; against the same report by the rules in SQL over the raw
events, chdb's ``windowFunnel`` over the same raw events, and DuckDB over the bounds layout
(bench/readpath.py). The stored progress is what the engine derives from the raw events
(bench/journeys.py), and every answer is checked equal to ours before any is timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import numpy as np
import orjson
from sqlalchemy import text

from bench.common import percentile, record
from bench.journeys import (
    MAX_BOUND,
    MIN_BOUND,
    RANGE_US,
    START_US,
    STEPS,
    WINDOW_US,
    Journeys,
    bounds_columns,
    generate,
    person_slices,
    touch_next,
    touch_previous,
    verify,
)
from bench.readpath import (
    ALL,
    Answer,
    BoundsLayout,
    ClickHouse,
    ClickHouseBounds,
    same_answers,
    steps_answer,
    timed,
)
from services.aggregator.processor import Processor
from services.api.app import create_app
from services.api.repository import funnels as api_funnels
from services.api.settings import ApiSettings
from shared.clock import now_us
from shared.db import create_engine, sessionmaker
from shared.funnel import definition_from_doc
from tests.databases import migrated
from tests.helpers import canonical, create_key, records
from tests.workload import CHANNELS

FUNNEL_DOC = {
    "name": "bench",
    "steps": [{"event": s, "where": []} for s in STEPS],
    "window_seconds": WINDOW_US // 1_000_000,
    "order": "ordered",
    "exclusions": [],
    "breakdowns": ["channel"],
    "value_property": None,
}
COPY_ROWS = 200_000


def _bound(x: int) -> int | None:
    return None if x in (MIN_BOUND, MAX_BOUND) else x


def _rows(
    j: Journeys, funnel_id: str, bounds: tuple[np.ndarray, np.ndarray]
) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """The entries, touches and raw events as COPY rows (JSON columns as text), with the
    bounds the aggregator stores (``bounds.entry_bounds`` person by person; every touch has
    a channel, so its neighbours are the person's previous and next touch)."""
    ids = [j.person_id(p) for p in range(j.persons)]
    names = [orjson.dumps({"channel": c}).decode() for c in CHANNELS]
    entries = []
    left, right = bounds[0].tolist(), bounds[1].tolist()
    for k in range(len(j.t0)):
        r, c = int(j.reached[k]), CHANNELS[j.channel[k]]
        times = orjson.dumps(j.times[k, :r].tolist()).decode()
        values = orjson.dumps({"channel": [c] * r}).decode()
        stored = (funnel_id, ids[j.person[k]], int(j.t0[k]), r, times, False, values)
        entries.append((*stored, _bound(left[k]), _bound(right[k])))
    touches, raw = [], []
    _, events_at = person_slices(j)
    previous, following = touch_previous(j).tolist(), touch_next(j).tolist()
    for k in range(len(j.ev_ts)):
        p, ts, props = int(j.ev_person[k]), int(j.ev_ts[k]), names[j.ev_channel[k]]
        near = orjson.dumps({"channel": [_bound(previous[k]), _bound(following[k])]}).decode()
        touches.append((funnel_id, ids[p], ts, 0, props, near))
        event_id = f"{ids[p]}-{k - events_at[p]}"  # as journeys.events_of numbers them
        raw.append(("bench", event_id, ids[p], STEPS[j.ev_step[k]], ts, ts, props, "{}", ids[p]))
    return entries, touches, raw


async def seed(url: str, j: Journeys, bounds: tuple[np.ndarray, np.ndarray]) -> tuple[str, str]:
    """The funnel, then its stored progress and the raw events, by COPY."""
    engine = create_engine(url)
    async with sessionmaker(engine).begin() as session:
        key = await create_key(session, "bench", "admin")
        funnel_id = await api_funnels.create_funnel(session, "bench", FUNNEL_DOC, now_us=now_us())
        await session.execute(
            text("UPDATE funnels SET backfill_done = true WHERE id = :id"), {"id": funnel_id}
        )
    await engine.dispose()
    entries, touches, raw = _rows(j, funnel_id, bounds)
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        for table, rows, columns in [
            ("funnel_entries", entries, ENTRY_COLUMNS),
            ("funnel_touches", touches, TOUCH_COLUMNS),
            ("events", raw, EVENT_COLUMNS),
        ]:
            for chunk in range(0, len(rows), COPY_ROWS):
                await conn.copy_records_to_table(
                    table, records=rows[chunk : chunk + COPY_ROWS], columns=columns
                )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return key, funnel_id


ENTRY_COLUMNS = [
    "funnel_id",
    "person_id",
    "t0_us",
    "reached",
    "step_times",
    "disqualified",
    "step_values",
    "lft_us",
    "rgt_us",
]
TOUCH_COLUMNS = ["funnel_id", "person_id", "ts_us", "seq", "values", "neighbours"]
EVENT_COLUMNS = [
    "project_id",
    "event_id",
    "person_id",
    "name",
    "ts_us",
    "received_at_us",
    "properties",
    "context",
    "user_id",
]

# The report by the rules over the raw events: every step-1 event in range opens an entry,
# which takes each next step at its earliest event within the window; a person is counted by
# the furthest entry, on a tie the one that did its furthest step first, then the latest
# (shared.funnel.counted_key), and grouped by the first channel among their step events in
# range. No exclusions and one step per event name, as in this workload.
RAW_SQL = """
WITH v AS (
  SELECT person_id COLLATE "C" AS person_id, ts_us AS t0 FROM events
  WHERE project_id = 'bench' AND name = 'visit' AND ts_us >= :lo AND ts_us < :hi
), s2 AS (
  SELECT v.person_id, v.t0, min(e.ts_us) AS t FROM v JOIN events e ON e.project_id = 'bench'
   AND e.person_id = v.person_id AND e.name = 'signup' AND e.ts_us >= v.t0
   AND e.ts_us <= v.t0 + :w GROUP BY 1, 2
), s3 AS (
  SELECT s2.person_id, s2.t0, min(e.ts_us) AS t FROM s2 JOIN events e ON e.project_id = 'bench'
   AND e.person_id = s2.person_id AND e.name = 'activate' AND e.ts_us >= s2.t
   AND e.ts_us <= s2.t0 + :w GROUP BY 1, 2
), s4 AS (
  SELECT s3.person_id, s3.t0, min(e.ts_us) AS t FROM s3 JOIN events e ON e.project_id = 'bench'
   AND e.person_id = s3.person_id AND e.name = 'pay' AND e.ts_us >= s3.t
   AND e.ts_us <= s3.t0 + :w GROUP BY 1, 2
), s5 AS (
  SELECT s4.person_id, s4.t0, min(e.ts_us) AS t FROM s4 JOIN events e ON e.project_id = 'bench'
   AND e.person_id = s4.person_id AND e.name = 'renew' AND e.ts_us >= s4.t
   AND e.ts_us <= s4.t0 + :w GROUP BY 1, 2
), entries AS (
  SELECT v.person_id, v.t0, s2.t AS t2, s3.t AS t3, s4.t AS t4, s5.t AS t5,
         1 + (s2.t IS NOT NULL)::int + (s3.t IS NOT NULL)::int + (s4.t IS NOT NULL)::int
           + (s5.t IS NOT NULL)::int AS reached
  FROM v LEFT JOIN s2 USING (person_id, t0) LEFT JOIN s3 USING (person_id, t0)
   LEFT JOIN s4 USING (person_id, t0) LEFT JOIN s5 USING (person_id, t0)
), counted AS (
  SELECT DISTINCT ON (person_id) * FROM entries
  ORDER BY person_id, reached DESC, coalesce(t5, t4, t3, t2, t0), t0 DESC
), first_touch AS (
  SELECT DISTINCT ON (person_id COLLATE "C") person_id COLLATE "C" AS person_id,
         properties->>'channel' AS channel
  FROM events WHERE project_id = 'bench' AND ts_us >= :lo AND ts_us < :hi
   AND name IN ('visit', 'signup', 'activate', 'pay', 'renew')
   AND properties->>'channel' IS NOT NULL
  ORDER BY person_id COLLATE "C", ts_us, array_position(
    ARRAY['visit', 'signup', 'activate', 'pay', 'renew'], name::text), event_id
)
SELECT GROUPING(channel) = 1, channel, count(*), count(t2), count(t3), count(t4), count(t5),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY t2 - t0),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY t3 - t2),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY t4 - t3),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY t5 - t4)
FROM counted LEFT JOIN first_touch USING (person_id)
GROUP BY GROUPING SETS ((), (channel))
"""


async def raw_sql(url: str, runs: int) -> tuple[Answer, list[float]]:
    """The raw-events SQL's answer, and its latencies."""
    engine = create_engine(url)
    found, rows = [], []
    lo, hi = RANGE_US
    async with engine.connect() as conn:
        for _ in range(runs):
            started = time.perf_counter()
            result = await conn.execute(text(RAW_SQL), {"lo": lo, "hi": hi, "w": WINDOW_US})
            rows = list(result)
            found.append(time.perf_counter() - started)
    await engine.dispose()
    return {ALL if r[0] else r[1]: steps_answer(r[2:]) for r in rows}, found


async def changed_rows_read(url: str, funnel_id: str, persons: int, runs: int) -> list[float]:
    """Latencies of reading 200 random persons' entries and touches, what a replica reads
    from the database after a commit that changed them."""
    rng = np.random.default_rng(13)
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    found = []
    try:
        for _ in range(runs):
            ids = [f"p{p:07d}" for p in rng.choice(persons, 200, replace=False)]
            started = time.perf_counter()
            for table in ("funnel_entries", "funnel_touches"):
                await conn.fetch(
                    f"SELECT * FROM {table} WHERE funnel_id = $1 AND person_id = ANY($2)",  # noqa: S608
                    funnel_id,
                    ids,
                )
            found.append(time.perf_counter() - started)
    finally:
        await conn.close()
    return found


def api_answer(doc: dict) -> Answer:
    """The answer in a report response: persons and median per step, whole and per group."""

    def steps(found: list[dict]) -> tuple[tuple[int, float | None], ...]:
        return tuple(
            (s["persons"], s["time_from_previous"] and s["time_from_previous"]["median_s"])
            for s in found
        )

    groups = {g["value"]: steps(g["steps"]) for g in doc["breakdown"]["groups"]}
    return {ALL: steps(doc["steps"]), **groups}


@contextlib.asynccontextmanager
async def api_client(
    url: str, key: str, read_engine: str = "duckdb", funnel_id: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The API app in-process (its lifespan run), with a client holding an admin key; with
    ``funnel_id``, once its columnar replica holds that funnel (``LOADS`` says how long)."""
    settings = ApiSettings(database_url=url, gauge_refresh_s=3600, read_engine=read_engine)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://api",
            timeout=600,
            headers={"Authorization": f"Bearer {key}"},
        ) as client,
    ):
        replica = app.state.api.reports.replica
        if replica is not None and funnel_id is not None:
            started = time.perf_counter()
            await client.get(f"/v1/funnels/{funnel_id}/report", params=REPORT_PARAMS)
            await replica.loaded(funnel_id)
            assert replica.holds(funnel_id, 1)
            LOADS.append(time.perf_counter() - started)
            MEMORY.append(await asyncio.to_thread(replica.memory_bytes))
            rng = np.random.default_rng(17)
            persons = int(MEMORY_PERSONS[0])
            for _ in range(20):
                ids = [f"p{p:07d}" for p in rng.choice(persons, 200, replace=False)]
                started = time.perf_counter()
                await replica.apply(funnel_id, ids)
                APPLIED.append(time.perf_counter() - started)
        yield client


REPORT_PARAMS = {"from": "2026-01-01", "to": "2026-04-01", "breakdown": "channel"}
LOADS: list[float] = []  # seconds the replica took to load the funnel whole
MEMORY: list[int] = []  # the replica's DuckDB memory once loaded, bytes
MEMORY_PERSONS: list[int] = []  # how many persons the funnel has
APPLIED: list[float] = []  # seconds the replica took to re-read and replace 200 persons


async def our_latencies(
    url: str, key: str, funnel_id: str, runs: int, read_engine: str = "duckdb"
) -> tuple[Answer, list[float], list[float]]:
    """Our answer (checked the same cold and cached), then (computed, cached) request
    latencies: computed ones ask for ``no-cache``."""
    computed, cached, answers = [], [], []
    async with api_client(url, key, read_engine, funnel_id) as client:
        params = {"from": "2026-01-01", "to": "2026-04-01", "breakdown": "channel"}
        path = f"/v1/funnels/{funnel_id}/report"
        for _ in range(runs):
            started = time.perf_counter()
            r = await client.get(path, params=params, headers={"Cache-Control": "no-cache"})
            computed.append(time.perf_counter() - started)
            assert r.status_code == 200, r.text
            assert r.json()["cached"] is False
            answers.append(api_answer(r.json()))
        for _ in range(200):
            started = time.perf_counter()
            r = await client.get(path, params=params)
            cached.append(time.perf_counter() - started)
            assert r.json()["cached"] is True
        answers.append(api_answer(r.json()))
    assert all(a == answers[0] for a in answers)
    return answers[0], computed, cached


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
    async with api_client(url, key, "duckdb", funnel_id) as client:
        params = REPORT_PARAMS
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
    persons = 100_000 if quick else 1_000_000
    figures: dict[str, float | int | str] = {}
    started = time.perf_counter()
    j = generate(persons)
    MEMORY_PERSONS.append(persons)
    figures["generated, s"] = time.perf_counter() - started
    started = time.perf_counter()
    checked = verify(j, definition_from_doc(FUNNEL_DOC), min(persons, 100_000))
    figures["persons checked against the engine"] = checked
    figures["checking them, s"] = time.perf_counter() - started
    started = time.perf_counter()
    bounds = bounds_columns(j)
    figures["bounds.entry_bounds for every person (seeding what the aggregator stores), s"] = (
        time.perf_counter() - started
    )
    with migrated("postgresql", Path(tempfile.mkdtemp())) as url:
        started = time.perf_counter()
        key, funnel_id = asyncio.run(seed(url, j, bounds))
        figures["seeding PostgreSQL (COPY, ANALYZE), s"] = time.perf_counter() - started
        ours, computed, cached = asyncio.run(our_latencies(url, key, funnel_id, 30))
        in_database, database_runs, _ = asyncio.run(
            our_latencies(url, key, funnel_id, 3, "database")
        )
        same_answers("ours computed in PostgreSQL", ours, in_database)
        raw, raw_runs = asyncio.run(raw_sql(url, 3))
        same_answers("raw-events SQL", ours, raw)
        changed_read = asyncio.run(changed_rows_read(url, funnel_id, persons, 50))
        streamed, ages, batches = asyncio.run(
            streamed_latencies(url, key, funnel_id, 20 if quick else 60)
        )
    clickhouse = ClickHouse(j)
    same_answers("chdb windowFunnel", ours, clickhouse.answer(), medians=False)
    chdb_runs = timed(clickhouse.answer, 10)
    layout = BoundsLayout(j, bounds)
    same_answers("DuckDB over the bounds layout", ours, layout.answer())
    duck_runs = timed(layout.answer, 20)
    clickhouse_bounds = ClickHouseBounds(clickhouse, layout)
    same_answers("chdb over the bounds layout", ours, clickhouse_bounds.answer())
    chdb_bounds_runs = timed(clickhouse_bounds.answer, 20)
    applied = layout.applied_batches(persons, 200, 50)
    applied_many = layout.applied_batches(persons, persons // 100, 10)
    same_answers("DuckDB after applying batches", ours, layout.answer())
    per_million = 1_000_000 / persons
    record(
        f"report ({persons:,} persons, 90 days, breakdown by channel, PostgreSQL)",
        {
            **figures,
            "entries": len(j.t0),
            "raw events": len(j.ev_ts),
            "answers equal (ours, raw SQL, chdb counts, DuckDB bounds)": "yes",
            "ours computed (API, columnar replica) p50, ms": percentile(computed, 0.5) * 1000,
            "ours computed (API, columnar replica) p99, ms": percentile(computed, 0.99) * 1000,
            "ours computed (API, in PostgreSQL) p50, ms": percentile(database_runs, 0.5) * 1000,
            "replica: funnel loaded whole, s": LOADS[0],
            "replica: DuckDB memory, MB per million persons": MEMORY[0] / 1e6 * per_million,
            "replica: 200 persons re-read and replaced (a commit applied), p50 ms": percentile(
                APPLIED, 0.5
            )
            * 1000,
            "replica: 200 persons re-read and replaced, p99 ms": percentile(APPLIED, 0.99) * 1000,
            "ours cached p50, ms": percentile(cached, 0.5) * 1000,
            "ours cached p99, ms": percentile(cached, 0.99) * 1000,
            "raw-events SQL p50, ms": percentile(raw_runs, 0.5) * 1000,
            "raw-events SQL p99, ms": percentile(raw_runs, 0.99) * 1000,
            "chdb windowFunnel p50, ms": percentile(chdb_runs, 0.5) * 1000,
            "chdb windowFunnel p99, ms": percentile(chdb_runs, 0.99) * 1000,
            "DuckDB bounds layout p50, ms": percentile(duck_runs, 0.5) * 1000,
            "DuckDB bounds layout p99, ms": percentile(duck_runs, 0.99) * 1000,
            "chdb bounds layout p50, ms": percentile(chdb_bounds_runs, 0.5) * 1000,
            "chdb bounds layout p99, ms": percentile(chdb_bounds_runs, 0.99) * 1000,
            "DuckDB tables, MB per million persons": layout.table_bytes / 1e6 * per_million,
            "DuckDB tables loaded from Arrow, s": layout.loaded_s,
            "DuckDB: a commit of 200 persons' rows applied, p50 ms": percentile(applied, 0.5)
            * 1000,
            "DuckDB: a commit of 200 persons' rows applied, p99 ms": percentile(applied, 0.99)
            * 1000,
            "DuckDB: 1 % of the persons' rows applied at once, p50 ms": percentile(
                applied_many, 0.5
            )
            * 1000,
            "PostgreSQL: 200 persons' entries and touches read, p50 ms": percentile(
                changed_read, 0.5
            )
            * 1000,
            "PostgreSQL: 200 persons' entries and touches read, p99 ms": percentile(
                changed_read, 0.99
            )
            * 1000,
            "ours computed p50 / chdb p50": percentile(computed, 0.5) / percentile(chdb_runs, 0.5),
            "ours computed p99 / chdb p99": percentile(computed, 0.99)
            / percentile(chdb_runs, 0.99),
            "under a stream of batches, served p50, ms": percentile(streamed, 0.5) * 1000,
            "under a stream of batches, served p99, ms": percentile(streamed, 0.99) * 1000,
            "under a stream of batches, slowest served, ms": max(streamed) * 1000,
            "under a stream of batches, reads": len(streamed),
            "under a stream of batches, oldest report served, s": max(ages),
            "under a stream of batches, batches committed": batches,
        },
    )
