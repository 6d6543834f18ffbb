"""Identity merge through the aggregator's unit of work, on real SQLite and PostgreSQL: the
examples of the rules, in every arrival order, with duplicates and in one or many batches."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from services.aggregator.processor import Processor
from services.api.repository import funnels as api_funnels
from services.api.schemas import FunnelIn
from shared.clock import now_us
from shared.events import EVENTS_TOPIC, CanonicalEvent
from shared.tables import funnel_entries, identity_links, identity_refusals
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


async def test_links_and_refusals_are_stored(sessions):
    await new_funnel(sessions, "proj", "a", "b")
    feed = Feed(sessions)
    await feed.finish_backfill()
    await feed.send([event("b", 3, user="W", anon="X"), event("b", 2, user="U", anon="X")])
    await feed.send([event("b", 9, user="U", anon="X")])  # repeats the link: nothing new
    async with sessions() as session:
        links = (await session.execute(select(identity_links))).all()
        refusals = (await session.execute(select(identity_refusals))).all()
    assert [(r.id, r.target, r.root, r.ts_us, r.event_id) for r in links] == [
        ("X", "U", "U", (T0 + 2) * 1_000_000, "U-b-2")
    ]
    assert [(r.anon_id, r.user_id, r.reason) for r in refusals] == [
        ("X", "W", "already linked to U")
    ]


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
