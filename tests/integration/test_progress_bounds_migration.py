"""Migration 0013 fills the bounds of the rows stored before it, per person."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import command

from shared.db import alembic_config, create_engine, sessionmaker
from shared.tables import Document
from tests.stored_bounds import assert_stored_bounds_hold

ENTRIES = [  # person, t0, step times, disqualified
    ("p", 10, [10], False),
    ("p", 20, [20, 21, 25], False),  # beats the one before and the one after
    ("p", 30, [30, None, 31], False),
    ("p", 40, [40, 41, 42, 43], True),  # got furthest, disqualified
    ("q", 15, [15, 16], False),
]
TOUCHES = [("p", 10, 0, {"c": "a"}), ("p", 20, 0, {"c": "b"}), ("p", 20, 1, {}), ("q", 15, 0, {})]

# The tables as migration 0012 left them.
entries = sa.table(
    "funnel_entries",
    *(sa.column(c) for c in ("funnel_id", "person_id", "t0_us", "reached", "disqualified")),
    sa.column("step_times", Document),
    sa.column("step_values", Document),
)
touches = sa.table(
    "funnel_touches",
    *(sa.column(c) for c in ("funnel_id", "person_id", "ts_us", "seq")),
    sa.column("values", Document),
)


def test_the_migration_fills_the_bounds_of_stored_rows(database_url):
    config = alembic_config(database_url)
    command.downgrade(config, "0012")
    asyncio.run(_store(database_url))
    command.upgrade(config, "head")
    assert asyncio.run(_check(database_url)) == len(ENTRIES) + len(TOUCHES)


async def _store(url: str) -> None:
    engine = create_engine(url)
    try:
        async with sessionmaker(engine).begin() as session:
            await session.execute(
                sa.insert(entries),
                [
                    {"funnel_id": "f", "person_id": p, "t0_us": t0, "reached": len(times)}
                    | {"disqualified": dq, "step_times": times, "step_values": {}}
                    for p, t0, times, dq in ENTRIES
                ],
            )
            await session.execute(
                sa.insert(touches),
                [
                    {"funnel_id": "f", "person_id": p, "ts_us": ts, "seq": seq, "values": values}
                    for p, ts, seq, values in TOUCHES
                ],
            )
    finally:
        await engine.dispose()


async def _check(url: str) -> int:
    engine = create_engine(url)
    try:
        sessions = sessionmaker(engine)
        async with sessions() as session:
            bounds = await session.execute(
                sa.text("SELECT t0_us, lft_us, rgt_us FROM funnel_entries ORDER BY t0_us")
            )
            # 20 beats 10 and 30 (and the disqualified 40 beats every clean one after it).
            assert [tuple(r) for r in bounds] == [
                (10, None, 20),
                (15, None, None),
                (20, None, 40),
                (30, 20, 40),
                (40, 40, None),
            ]
        return await assert_stored_bounds_hold(sessions)
    finally:
        await engine.dispose()
