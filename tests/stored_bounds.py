"""The stored bounds (migration 0013) against ``shared.bounds`` over the stored rows."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select

from shared.bounds import entry_bounds, touch_neighbours
from shared.funnel import Entry, Touch
from shared.tables import funnel_entries, funnel_touches


async def assert_stored_bounds_hold(sessions: Any, funnel_id: str | None = None) -> int:
    """Every stored entry's bounds and touch's neighbours are those of its person's stored
    rows (of the funnel, or of every funnel); how many rows were checked."""
    e, t = funnel_entries.c, funnel_touches.c
    entries: dict[tuple[str, str], list[Any]] = defaultdict(list)
    touches: dict[tuple[str, str], list[Any]] = defaultdict(list)
    of_entries = select(
        e.funnel_id, e.person_id, e.t0_us, e.step_times, e.disqualified, e.lft_us, e.rgt_us
    )
    of_touches = select(t.funnel_id, t.person_id, t.ts_us, t.seq, t["values"], t.neighbours)
    if funnel_id is not None:
        of_entries = of_entries.where(e.funnel_id == funnel_id)
        of_touches = of_touches.where(t.funnel_id == funnel_id)
    async with sessions() as session:
        for f, p, *row in await session.execute(of_entries):
            entries[(f, p)].append(row)
        for f, p, *row in await session.execute(of_touches):
            touches[(f, p)].append(row)
    for key, rows in entries.items():
        found = entry_bounds([Entry(t0, tuple(times), dq) for t0, times, dq, _, _ in rows])
        stored = [(lft, rgt) for *_, lft, rgt in rows]
        assert stored == [(b.left, b.right) for b in found], key
    for key, rows in touches.items():
        found = touch_neighbours([Touch(ts, seq, values) for ts, seq, values, _ in rows])
        assert [r[-1] for r in rows] == found, key
    return sum(map(len, entries.values())) + sum(map(len, touches.values()))
