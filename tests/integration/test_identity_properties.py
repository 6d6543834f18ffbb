"""Property-based, on real databases: linked ids through the aggregator equal the oracle.

Each example is a project of persons under several ids (tests/identity_streams.py) whose
events arrive in random batches, shuffled and partly redelivered, the funnel defined
part-way through and backfilled. The reports (persons per step, the persons named), the
pending re-marketing occurrences and, once they are fired, the ``remarketing.due`` messages
(person and ids) must be those of the oracle evaluating each root with all its ids' events.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from services.aggregator.processor import Processor
from services.aggregator.timers import TimerFirer
from services.api.app import create_app
from services.api.reports.python import Window, funnel_report
from services.api.repository import funnels as api_funnels
from services.api.repository import progress as api_progress
from services.api.settings import ApiSettings
from shared.clock import now_us
from shared.db import create_engine, sessionmaker
from shared.events import format_time, from_micros
from shared.funnel import US, definition_from_doc
from shared.tables import remarketing_timers as timers_table
from shared.tables import webhook_messages
from tests.helpers import create_key, records
from tests.identity_streams import identity_streams, shifted, to_canonical
from tests.oracle import entries_of, oracle_report
from tests.oracle_identity import Refusal, Sent, identities, persons
from tests.oracle_timers import Due, oracle_timers
from tests.stored_bounds import assert_stored_bounds_hold
from tests.unit.test_engine_properties import definitions

BASE_US = 1_767_225_600 * US  # 2026-01-01
FAR_US = BASE_US + 10**9 * US
_projects = itertools.count()
_partitions = itertools.count(10_000)

RULES = [
    {"name": "late", "from_step": 1, "after_seconds": 50, "grace_seconds": 0},
    {
        "name": "again",
        "from_step": 1,
        "after_seconds": 30,
        "repeat_every_seconds": 40,
        "until_seconds": 150,
        "grace_seconds": 0,
    },
]


class FarClock:
    def now_us(self) -> int:
        return FAR_US + 10**6 * US


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    doc=definitions(),
    rule=st.sampled_from(RULES),
    stream=identity_streams(),
    cut=st.integers(0, 100),
    chunk=st.sampled_from([1, 4]),
    seed=st.randoms(),
)
def test_linked_ids_through_the_database_equal_the_oracle(
    database_url, doc, rule, stream, cut, chunk, seed
):
    doc = {**doc, "remarketing": [{**rule, "goal_step": len(doc["steps"])}]}
    asyncio.run(_check(database_url, doc, shifted(stream[1], BASE_US), cut, chunk, seed))


async def _check(database_url, doc, delivered: list[Sent], cut, chunk, seed) -> None:
    engine = create_engine(database_url)
    try:
        await _compare(sessionmaker(engine), database_url, doc, delivered, cut, chunk, seed)
    finally:
        await engine.dispose()


async def _compare(sessions, url, doc, delivered: list[Sent], cut, chunk, seed) -> None:
    project = f"ident{next(_projects)}"
    flat = [to_canonical(project, e) for e in delivered]
    seed.shuffle(flat)
    split = len(flat) * cut // 100
    processor = Processor(sessions, f"group-{project}", horizon_us=lambda: 0)

    async def deliver(batch) -> None:
        for i in range(0, len(batch), chunk):
            part = next(_partitions)
            await processor.apply(records(batch[i : i + chunk], partition=part), {})

    await deliver(flat[:split])
    async with sessions.begin() as session:
        await create_key(session, project, "admin")
        funnel_id = await api_funnels.create_funnel(
            session, project, {"name": "p", **doc}, now_us=now_us()
        )
    await processor.backfill_step(1)
    await deliver(flat[split:] + flat[: split // 2])
    while await processor.backfill_step(2):
        pass
    f = definition_from_doc(doc)
    merged = persons(delivered)
    window = Window(BASE_US, FAR_US, FAR_US)
    async with sessions() as session:
        entries = await api_progress.entries_in_range(session, funnel_id, window.start, window.end)
    got = funnel_report(f, entries, window, "uniques")
    expected = oracle_report(f, merged, window.start, window.end, window.now)
    assert [s.persons for s in got.steps] == expected.persons
    await assert_stored_bounds_hold(sessions, funnel_id)  # merges and removals rebound
    assert {p for p, es in entries.items() if es} == {
        p for p, es in merged.items() if entries_of(f, es)
    }
    assert await _pending(sessions, funnel_id) == oracle_timers(f, merged)
    await _check_persons(sessions, url, project, delivered, entries)
    firer = TimerFirer(sessions, FarClock(), fire_backfilled=True)
    while await firer.fire_due():
        pass
    found = identities(delivered)
    assert await _messages(sessions, project) == Counter(
        (person, rule, format_time(from_micros(t0)), n, tuple(found.ids(person)))
        for person, rule, t0, n, _ in oracle_timers(f, merged)
    )


async def _check_persons(sessions, url, project: str, delivered: list[Sent], entries) -> None:
    """GET /v1/persons/{id} by every id with events or a link: the oracle's person, ids,
    links, refusals of its ids (a pair's first, as stored), first and last seen, entries."""
    found = identities(delivered)
    merged = persons(delivered)
    first_refusals: dict[tuple[str, str], Refusal] = {}
    for r in found.refusals:
        first_refusals.setdefault((r.claim.anon, r.claim.user), r)
    async with sessions.begin() as session:
        key = await create_key(session, project, "read")
    app = create_app(ApiSettings(database_url=url, report_max_stale_s=0))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers=headers
        ) as api:
            for id_ in sorted({e.person_id for e in delivered} | set(found.target)):
                answer = await api.get(f"/v1/persons/{id_}")
                assert answer.status_code == 200, (id_, answer.text)
                body = answer.json()
                root = found.root(id_)
                ids = found.ids(id_)
                assert (body["person_id"], body["ids"]) == (root, ids), id_
                assert sorted(
                    (k["id"], k["linked_to"], k["event_id"]) for k in body["links"]
                ) == sorted((i, c.user, c.event_id) for i, c in found.target.items() if i in ids)
                assert sorted(
                    (r["anonymous_id"], r["user_id"], r["event_id"], r["reason"])
                    for r in body["refused_links"]
                ) == sorted(
                    (r.claim.anon, r.claim.user, r.claim.event_id, r.reason)
                    for r in first_refusals.values()
                    if r.claim.anon in ids or r.claim.user in ids
                )
                times = [e.ts for e in merged.get(root, [])]
                assert (body["first_seen"], body["last_seen"]) == (
                    (format_time(from_micros(min(times))), format_time(from_micros(max(times))))
                    if times
                    else (None, None)
                )
                shown = [e["entry_time"] for fu in body["funnels"] for e in fu["entries"]]
                assert sorted(shown) == sorted(
                    format_time(from_micros(e.t0)) for e in entries.get(root, [])
                )


async def _pending(sessions, funnel_id: str) -> set[Due]:
    t = timers_table.c
    async with sessions() as session:
        rows = await session.execute(
            select(t.person_id, t.rule, t.entry_t0_us, t.occurrence, t.due_us).where(
                t.funnel_id == funnel_id, t.status == "pending"
            )
        )
        return {tuple(r) for r in rows}  # type: ignore[misc]


async def _messages(sessions, project: str) -> Counter[tuple[object, ...]]:
    m = webhook_messages.c
    async with sessions() as session:
        rows = await session.execute(
            select(m.payload).where(m.project_id == project, m.type == "remarketing.due")
        )
        payloads = [r[0] for r in rows]
    return Counter(
        (
            p["person_id"],
            p["rule"]["name"],
            p["entry_time"],
            p["rule"]["occurrence"],
            tuple(p.get("ids", ())),
        )
        for p in payloads
    )


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def now_us(self) -> int:
        return self.now


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    doc=definitions(),
    rule=st.sampled_from(RULES),
    stream=identity_streams(),
    cut=st.integers(0, 100),
    fired_at_s=st.integers(0, 400),
    seed=st.randoms(),
)
def test_a_trigger_is_sent_once_per_merged_entry_whenever_timers_fire(
    database_url, doc, rule, stream, cut, fired_at_s, seed
):
    """Timers fire part-way through the delivery (some under ids that get linked later,
    some that later events cancel), then after it: no entry and occurrence of a person is
    ever sent twice, under whichever of its ids, and every one the oracle says is due was
    sent."""
    doc = {**doc, "remarketing": [{**rule, "goal_step": len(doc["steps"])}]}
    delivered = shifted(stream[1], BASE_US)
    asyncio.run(_fire_midway(database_url, doc, delivered, cut, fired_at_s, seed))


async def _fire_midway(database_url, doc, delivered: list[Sent], cut, fired_at_s, seed) -> None:
    engine = create_engine(database_url)
    sessions = sessionmaker(engine)
    try:
        project = f"ident{next(_projects)}"
        async with sessions.begin() as session:
            await create_key(session, project, "admin")
            await api_funnels.create_funnel(session, project, {"name": "p", **doc}, now_us=now_us())
        flat = [to_canonical(project, e) for e in delivered]
        seed.shuffle(flat)
        split = len(flat) * cut // 100
        processor = Processor(sessions, f"group-{project}", horizon_us=lambda: 0)
        clock = Clock(BASE_US + fired_at_s * US)
        firer = TimerFirer(sessions, clock, fire_backfilled=True)
        for batch in (flat[:split], flat[split:] + flat[: split // 2]):
            for i in range(0, len(batch), 3):
                part = next(_partitions)
                await processor.apply(records(batch[i : i + 3], partition=part), {})
            while await processor.backfill_step(100):
                pass  # the funnel is new: its backfill runs once, over what is stored by then
            while await firer.fire_due():
                pass
            clock.now = FarClock().now_us()
        sent = await _messages(sessions, project)
    finally:
        await engine.dispose()
    found = identities(delivered)
    f = definition_from_doc(doc)
    per_entry = Counter()
    for (person, rule, entry_time, n, _), times in sent.items():
        per_entry[(found.root(person), rule, entry_time, n)] += times
    assert all(times == 1 for times in per_entry.values()), per_entry
    due = {
        (person, rule, format_time(from_micros(t0)), n)
        for person, rule, t0, n, _ in oracle_timers(f, persons(delivered))
    }
    assert due <= set(per_entry)
