"""The whole stack on PostgreSQL through faults, with real processes: a client sends 20,000
uniquely identified events, retrying as an SDK does, while the broker is frozen for 15 s, the
aggregator is killed with kill -9 twice (restarted each time, as a supervisor would), and
PostgreSQL is stopped for 10 s and started again. Every acknowledged event is counted exactly
once, no process needed a manual restart, and no answer was a 5xx but 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from services.aggregator.engine import PersonEvent
from shared.events import EVENTS_TOPIC, format_time, to_micros
from shared.funnel import definition_from_doc
from tests.oracle import oracle_report
from tests.private_postgres import private_cluster
from tests.stack import Stack, eventually, read_topic

FUNNEL = {
    "name": "faults",
    "steps": [{"event": "visit"}, {"event": "signup"}, {"event": "activate"}, {"event": "pay"}],
    "window_seconds": 3600,
}
NAMES = ("visit", "signup", "activate", "pay", "browse")
EVENTS, PERSONS, BATCH = 20_000, 2_000, 100
SEND_S = 85  # the client spreads its batches over this long, falling behind during faults
# Between faults: long enough for counting to resume, so that each recovery is measured (a
# killed member's partitions move once its session expires, 6 s in tests/stack.py, and the
# group has rebalanced: 4 to 11 s here).
GAP_S = 16


def workload(seed: int) -> list[dict[str, Any]]:
    """Events of the last hours, each person's in time order, persons interleaved at random."""
    rng = random.Random(seed)
    base = datetime.now(UTC) - timedelta(hours=6)
    per_person: list[list[dict[str, Any]]] = []
    for p in range(PERSONS):
        t = base + timedelta(seconds=rng.randrange(3600))
        mine = []
        for i in range(EVENTS // PERSONS):
            t += timedelta(seconds=rng.randrange(1, 600), microseconds=rng.randrange(10**6))
            mine.append(
                {
                    "event_id": f"fault-{p}-{i}",
                    "user_id": f"person-{p:05d}",
                    "event": rng.choice(NAMES),
                    "timestamp": format_time(t),
                }
            )
        per_person.append(mine)
    flat = [(rng.random(), i, e) for mine in per_person for i, e in enumerate(mine)]
    flat.sort(key=lambda x: (x[0] + x[1], x[1]))  # mostly each person's in order
    return [e for _, _, e in flat]


@dataclass
class Client:
    """Posts batches until each is acknowledged: on 429/503 after Retry-After (at most 2 s),
    on a broken connection after 0.5 s, with the same event ids."""

    base_url: str
    key: str
    acknowledged: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    unsent: int = 0

    def run(self, events: list[dict[str, Any]], deadline: float) -> None:
        started = time.monotonic()
        batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
        with httpx.Client(base_url=self.base_url, auth=(self.key, ""), timeout=30) as http:
            for n, batch in enumerate(batches):
                time.sleep(max(0.0, started + n * SEND_S / len(batches) - time.monotonic()))
                if not self._deliver(http, batch, deadline):
                    self.unsent += len(batches) - n
                    return

    def _deliver(self, http: httpx.Client, batch: list[dict[str, Any]], deadline: float) -> bool:
        while time.monotonic() < deadline:
            try:
                answer = http.post("/v1/events", json={"batch": batch})
            except httpx.TransportError:
                self.statuses[0] += 1
                time.sleep(0.5)
                continue
            self.statuses[answer.status_code] += 1
            if answer.status_code == 202:
                body = answer.json()
                if body["rejected"]:
                    self.violations.append(f"rejected: {body['rejected'][:2]}")
                self.acknowledged.update(body["event_ids"])
                return True
            retry_after = answer.headers.get("Retry-After")
            if answer.status_code not in (429, 503) or retry_after is None:
                self.violations.append(f"{answer.status_code} {answer.headers} {answer.text}")
                time.sleep(0.5)
                continue
            time.sleep(min(float(retry_after), 2.0))
        return False


class Progress:
    """Samples (monotonic time, next offsets summed) from the database every 0.2 s; None
    while it cannot be read."""

    def __init__(self, port: int, database: str) -> None:
        self.samples: list[tuple[float, int | None]] = []
        self._where = {"host": "127.0.0.1", "port": port, "user": "postgres", "database": database}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._watch()), daemon=True)
        self._thread.start()

    async def _watch(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                conn = conn or await asyncpg.connect(**self._where, timeout=2)
                value = await conn.fetchval(
                    "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets"
                )
                self.samples.append((time.monotonic(), int(value)))
            except Exception:  # any failure of the sampler's own connection: reconnect
                # (asyncpg's InternalClientError, seen when the server stops mid-query, is
                # none of its usual error classes, and it killed this thread once)
                if conn is not None:
                    conn.terminate()
                conn = None
                self.samples.append((time.monotonic(), None))
            await asyncio.sleep(0.2)
        if conn is not None:
            await conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def resumed_after(self, at: float) -> float | None:
        """Seconds from ``at`` until the offsets first moved past where they were then."""
        before = max((v for t, v in self.samples if t <= at and v is not None), default=0)
        for t, v in self.samples:
            if t > at and v is not None and v > before:
                return t - at
        return None


def expected_counts(events: list[dict[str, Any]], count: str) -> list[int]:
    by_person: dict[str, list[PersonEvent]] = defaultdict(list)
    for e in events:
        ts = to_micros(datetime.fromisoformat(e["timestamp"]))
        by_person[e["user_id"]].append(PersonEvent(e["event_id"], ts, e["event"], {}))
    far = 10**18
    return oracle_report(definition_from_doc(FUNNEL), by_person, 0, far, far, count).persons


def test_acknowledged_events_are_counted_once_through_broker_aggregator_and_database_faults(
    tmp_path,
):
    events = workload(seed=17)
    with private_cluster() as pg:
        url = pg.create_database("funnel")
        stack = Stack(tmp_path, url, extra_env={"INGEST_KEY_CACHE_S": "1"}).start()
        progress = Progress(pg.port, "funnel")
        marks: dict[str, float] = {}
        try:
            with stack.api() as api:
                funnel_id = api.post("/v1/funnels", json=FUNNEL).json()["id"]
            client = Client(f"http://127.0.0.1:{stack.ports['ingest']}", stack.keys["write"])
            sender = threading.Thread(target=client.run, args=(events, time.monotonic() + 180))
            sender.start()
            inject_faults(stack, pg, marks)
            sender.join()
            assert client.unsent == 0, f"batches never acknowledged: {client.unsent}"
            assert client.violations == []
            through_outage = stack.aggregators[-1]
            check_counts(stack, funnel_id, events, client)
            assert through_outage.poll() is None, "the aggregator must have ridden it out"
            assert len(stack.aggregators) == 3  # the first and the two a supervisor restarted
            for name, process in stack.services.items():
                assert process.poll() is None, f"{name} must still run"
            report(progress, marks, client)
        except AssertionError:
            print(stack.logs())  # noqa: T201 - the processes' logs explain a failure
            raise
        finally:
            progress.stop()
            stack.stop()


def inject_faults(stack: Stack, pg: Any, marks: dict[str, float]) -> None:
    """Freeze the broker 15 s, kill -9 the aggregator twice, stop PostgreSQL for 10 s."""
    time.sleep(3)
    marks["freeze"] = time.monotonic()
    stack.broker.freeze()
    time.sleep(15)
    stack.broker.thaw()
    marks["thaw"] = time.monotonic()
    for n in (1, 2):
        time.sleep(GAP_S)
        victim = stack.aggregators[-1]
        victim.kill()
        victim.wait()
        marks[f"kill {n}"] = time.monotonic()
        stack.start_aggregator()
    time.sleep(GAP_S)
    marks["database stopped"] = time.monotonic()
    pg.stop("fast")
    marks["database down"] = time.monotonic()
    time.sleep(10)
    marks["database starting"] = time.monotonic()
    pg.start()
    marks["database started"] = time.monotonic()


def check_counts(stack: Stack, funnel_id: str, events: list[dict[str, Any]], client: Client):
    records = len(read_topic(stack.broker.bootstrap, EVENTS_TOPIC))
    asyncio.run(_wait_for_offsets(stack.database_url, records))
    stored = asyncio.run(_stored(stack.database_url))
    assert stored["dead_letters"] == 0, "nothing may have been taken for bad data"
    assert stored["ids"] == client.acknowledged
    acknowledged = [e for e in events if e["event_id"] in client.acknowledged]
    assert len(acknowledged) == len(events)
    params = {"from": format_time(datetime.now(UTC) - timedelta(days=2))}
    params["to"] = format_time(datetime.now(UTC) + timedelta(days=1))
    with stack.api() as api:
        for count in ("uniques", "totals"):
            want = expected_counts(acknowledged, count)
            eventually(
                lambda count=count: _persons(api, funnel_id, params, count),
                lambda got, want=want: got == want,
                timeout_s=60,
                what=f"report ({count}) equal to the oracle's {want}",
            )


def _persons(api: httpx.Client, funnel_id: str, params: dict[str, str], count: str) -> Any:
    answer = api.get(
        f"/v1/funnels/{funnel_id}/report",
        params={**params, "count": count},
        headers={"Cache-Control": "no-cache"},
    )
    if answer.status_code != 200:
        return (answer.status_code, answer.text[:200])
    return [s["persons"] for s in answer.json()["steps"]]


async def _wait_for_offsets(url: str, records: int) -> None:
    conn = await _connect(url)
    try:
        deadline = time.monotonic() + 90
        value = 0
        while time.monotonic() < deadline:
            value = await conn.fetchval(
                "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets"
            )
            if value == records:
                return
            await asyncio.sleep(0.25)
        raise AssertionError(f"offsets reached {value} of {records} records")
    finally:
        await conn.close()


async def _stored(url: str) -> dict[str, Any]:
    conn = await _connect(url)
    try:
        ids = {r[0] for r in await conn.fetch("SELECT event_id FROM events")}
        letters = await conn.fetchval("SELECT count(*) FROM dead_letters")
        return {"ids": ids, "dead_letters": letters}
    finally:
        await conn.close()


async def _connect(url: str) -> Any:
    return await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))


def report(progress: Progress, marks: dict[str, float], client: Client) -> None:
    """What the faults cost, for the record (pytest -s shows it)."""
    resumed = {
        "after the thaw": progress.resumed_after(marks["thaw"]),
        "after kill 1": progress.resumed_after(marks["kill 1"]),
        "after kill 2": progress.resumed_after(marks["kill 2"]),
        "after the database started": progress.resumed_after(marks["database started"]),
    }
    first = marks["freeze"]
    lines = [f"{name} at {t - first:.1f} s" for name, t in marks.items()]
    lines += [f"counting resumed {k}: {v:.1f} s" for k, v in resumed.items() if v is not None]
    lines.append(f"answers: {dict(sorted(client.statuses.items()))}")
    print("\n".join(lines))  # noqa: T201 - measurements for the record
    assert all(v is not None for v in resumed.values()), resumed
