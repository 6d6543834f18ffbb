"""Identity merge through the aggregator's unit of work, on real SQLite and PostgreSQL: the
examples of the rules, in every arrival order, with duplicates and in one or many batches."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from services.aggregator.processor import Processor
from services.api.repository import funnels as api_funnels
from services.api.schemas import FunnelIn
from shared.clock import now_us
from shared.events import EVENTS_TOPIC, CanonicalEvent, partition_for, record_key
from shared.tables import funnel_entries, identity_links, identity_refusals, person_signals
from tests.helpers import create_key, records

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
GROUP = "test-group"


def event(
    name: str,
    at_s: float,
    *,
    user: str | None = None,
    anon: str | None = None,
    project: str = "proj",
    **props: Any,
) -> CanonicalEvent:
    ts = datetime.fromtimestamp(T0 + at_s, UTC)
    person = user or anon
    assert person is not None
    return CanonicalEvent(
        project_id=project,
        event_id=f"{person}-{name}-{at_s}",
        person_id=person,
        user_id=user,
        anonymous_id=anon,
        event=name,
        timestamp=ts,
        received_at=ts,
        properties=props,
    )


async def new_funnel(sessions, project: str, *steps: str) -> str:
    body = FunnelIn.model_validate(
        {"name": "f", "steps": [{"event": s} for s in steps]}
    ).model_dump()
    async with sessions.begin() as session:
        await create_key(session, project, "admin")
        return await api_funnels.create_funnel(session, project, body, now_us=now_us())


async def reached(sessions, funnel_id: str) -> dict[str, list[int]]:
    async with sessions() as session:
        rows = await session.execute(
            select(funnel_entries.c.person_id, funnel_entries.c.reached)
            .where(funnel_entries.c.funnel_id == funnel_id)
            .order_by(funnel_entries.c.person_id, funnel_entries.c.t0_us)
        )
        found: dict[str, list[int]] = {}
        for person, n in rows:
            found.setdefault(person, []).append(n)
        return found


class Feed:
    """Batches applied one after the other, the offsets following."""

    def __init__(self, sessions, group: str = GROUP) -> None:
        self.processor = Processor(sessions, group, horizon_us=lambda: 0)
        self.offset = 0

    async def finish_backfill(self) -> None:
        while await self.processor.backfill_step(100):
            pass

    async def send(self, batch: list[CanonicalEvent]) -> None:
        expected = {(EVENTS_TOPIC, 0): self.offset} if self.offset else {}
        await self.processor.apply(records(batch, first_offset=self.offset), expected)
        self.offset += len(batch)


def arrivals(stream: list[CanonicalEvent]):
    """Orders of the stream one event per batch (every one for short streams, else spread
    over all of them: each event first and last), the stream in one batch, and the
    stream twice (the second time reversed)."""
    orders = list(itertools.permutations(stream))
    for order in orders[:: max(1, len(orders) // 7)]:
        yield [[e] for e in order]
    yield [[e] for e in reversed(stream)]
    yield [stream]
    yield [[e] for e in stream] + [[e] for e in reversed(stream)]


async def same_in_every_order(sessions, stream_of, steps, expected) -> None:
    for i, batches in enumerate(arrivals(stream_of("p0"))):
        project = f"p{i}"
        funnel_id = await new_funnel(sessions, project, *steps)
        feed = Feed(sessions, f"group-{i}")
        await feed.finish_backfill()
        for batch in batches:
            await feed.send([_in(e, project) for e in batch])
        assert await reached(sessions, funnel_id) == expected, [
            e.event_id for b in batches for e in b
        ]


def _in(e: CanonicalEvent, project: str) -> CanonicalEvent:
    return CanonicalEvent(
        **{**{f: getattr(e, f) for f in e.__dataclass_fields__}, "project_id": project}
    )


async def test_an_anonymous_visitor_who_identifies_and_buys_is_one_person(sessions):
    def stream(project):
        return [
            event("landing", 1, anon="X"),
            event("signup", 2, user="U", anon="X"),
            event("purchase", 3, user="U"),
        ]

    await same_in_every_order(sessions, stream, ("landing", "signup", "purchase"), {"U": [3]})


async def test_a_second_user_for_an_anonymous_id_is_refused(sessions):
    def stream(project):
        return [
            event("a", 1, anon="X"),
            event("b", 2, user="U", anon="X"),
            event("b", 3, user="W", anon="X"),
            event("a", 4, user="W"),
        ]

    # W stays its own person: its b at 3 comes before its a at 4, so it only entered.
    await same_in_every_order(sessions, stream, ("a", "b"), {"U": [2], "W": [1]})


async def test_a_chain_of_links_is_one_person(sessions):
    def stream(project):
        return [
            event("a", 1, anon="X"),
            event("b", 2, user="U1", anon="X"),
            event("alias", 3, user="U2", previous_id="U1"),
            event("c", 4, user="U2"),
        ]

    await same_in_every_order(sessions, stream, ("a", "b", "c"), {"U2": [3]})


async def test_two_users_with_links_of_their_own_stay_two_persons(sessions):
    def stream(project):
        return [
            event("a", 1, anon="X"),
            event("b", 2, user="U1", anon="X"),
            event("a", 3, anon="Y"),
            event("alias", 4, user="U2", anon="Y"),
            event("alias", 5, user="U2", previous_id="U1"),
        ]

    await same_in_every_order(sessions, stream, ("a", "b"), {"U1": [2], "U2": [1]})


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_links_and_refusals_are_stored_and_counted(sessions):
    await new_funnel(sessions, "proj", "a", "b")
    feed = Feed(sessions)
    await feed.finish_backfill()
    links = _metric("funnel_identity_links_total")
    refused = _metric("funnel_identity_links_refused_total", reason="already_linked")
    await feed.send([event("b", 3, user="W", anon="X"), event("b", 2, user="U", anon="X")])
    await feed.send([event("b", 9, user="U", anon="X")])  # repeats the link: nothing new
    await feed.send([event("b", 10, user="W", anon="X")])  # a refused pair: refused once
    assert _metric("funnel_identity_links_total") - links == 1
    assert _metric("funnel_identity_links_refused_total", reason="already_linked") - refused == 1
    async with sessions() as session:
        links = (await session.execute(select(identity_links))).all()
        refusals = (await session.execute(select(identity_refusals))).all()
    assert [(r.id, r.target, r.ts_us, r.event_id) for r in links] == [
        ("X", "U", (T0 + 2) * 1_000_000, "U-b-2")
    ]
    assert [(r.anon_id, r.user_id, r.reason) for r in refusals] == [
        ("X", "W", "already linked to U")
    ]


async def test_an_anonymous_id_claimed_by_many_users_stays_cheap(sessions):
    funnel_id = await new_funnel(sessions, "proj", "a", "b")
    feed = Feed(sessions)
    await feed.finish_backfill()
    await feed.send([event("a", 0, anon="X")])
    for batch in range(6):
        await feed.send(
            [event("b", 1 + batch * 50 + i, user=f"U{batch}-{i}", anon="X") for i in range(50)]
        )
    async with sessions() as session:
        refusals = await session.scalar(select(func.count()).select_from(identity_refusals))
    assert refusals == 299
    assert (await reached(sessions, funnel_id))["U0-0"] == [2]


async def test_a_funnel_defined_later_sees_the_links(sessions):
    feed = Feed(sessions)
    await feed.send(
        [
            event("a", 1, anon="X"),
            event("b", 2, user="U", anon="X"),
            event("c", 3, user="U"),
        ]
    )
    funnel_id = await new_funnel(sessions, "proj", "a", "b", "c")
    await feed.finish_backfill()
    assert await reached(sessions, funnel_id) == {"U": [3]}


@pytest.fixture
def anyio_backend():
    return "asyncio"


class TwoProcesses:
    """Two aggregators, each holding one of the topic's two partitions: an event goes to
    its key's partition (``partition_for``, as ingest sends it)."""

    def __init__(self, sessions, group: str) -> None:
        self.sessions = sessions
        self.processors = [
            Processor(sessions, group, horizon_us=lambda: 0, topic_partitions=lambda: [0, 1])
            for _ in range(2)
        ]
        self.offsets = [0, 0]

    async def start(self) -> None:
        for i, p in enumerate(self.processors):
            await p.load_offsets([(EVENTS_TOPIC, i)])
            await p.backfill_step(100)

    def expected(self, i: int) -> dict:
        return {(EVENTS_TOPIC, i): self.offsets[i] or None}

    async def send(self, e: CanonicalEvent) -> None:
        i = partition_for(e.key, [0, 1])
        await self.processors[i].apply(
            records([e], partition=i, first_offset=self.offsets[i]), self.expected(i)
        )
        self.offsets[i] += 1

    async def settle(self) -> None:
        """Both take their signals until none is left."""
        for _ in range(20):
            async with self.sessions() as session:
                left = await session.scalar(select(func.count()).select_from(person_signals))
            if not left:
                return
            for i, p in enumerate(self.processors):
                await p.apply_signals(self.expected(i))
        raise AssertionError("signals keep coming")


def _partition(id_: str, project: str) -> int:
    return partition_for(record_key(project, id_), [0, 1])


async def test_two_processes_merge_ids_of_different_partitions(sessions):
    orders = [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]]
    for i, order in enumerate(orders):
        project = f"two{i}"
        anon = next(f"X{n}" for n in range(100) if _partition(f"X{n}", project) == 0)
        user = next(f"U{n}" for n in range(100) if _partition(f"U{n}", project) == 1)
        stream = [
            event("landing", 1, anon=anon, project=project),
            event("signup", 2, user=user, anon=anon, project=project),
            event("purchase", 3, user=user, project=project),
            event("landing", 4, anon=anon, project=project),
        ]
        funnel_id = await new_funnel(sessions, project, "landing", "signup", "purchase")
        both = TwoProcesses(sessions, f"two-{i}")
        await both.start()
        for n in order:
            await both.send(stream[n])
            if n == 1:
                # The link is the anonymous id's owner's to write: signalled, not written.
                async with sessions() as session:
                    assert await session.scalar(select(func.count()).select_from(person_signals))
        await both.settle()
        assert await reached(sessions, funnel_id) == {user: [3, 1]}, order


async def test_two_processes_follow_a_chain_of_links_across_partitions(sessions):
    for i, order in enumerate([[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]]):
        project = f"chain{i}"

        def on(partition: int, prefix: str, project: str = project) -> str:
            return next(
                f"{prefix}{n}"
                for n in range(200)
                if _partition(f"{prefix}{n}", project) == partition
            )

        anon, first, second = on(0, "X"), on(1, "U"), on(0, "V")
        stream = [
            event("a", 1, anon=anon, project=project),
            event("b", 2, user=first, anon=anon, project=project),
            event("alias", 3, user=second, project=project, previous_id=first),
            event("c", 4, user=second, project=project),
        ]
        funnel_id = await new_funnel(sessions, project, "a", "b", "c")
        both = TwoProcesses(sessions, f"chain-{i}")
        await both.start()
        for n in order:
            await both.send(stream[n])
        await both.settle()
        assert await reached(sessions, funnel_id) == {second: [3]}, order
