"""Stored progress as reports read it: entries and touches of a range, the change counters a
kept report's basis is made of, and the statements of the report computed in PostgreSQL
(built by :mod:`services.api.reports.sql`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import Text, cast, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator.engine import PersonEvent
from shared.funnel import Entry, Touch
from shared.tables import events, funnel_changes, funnel_entries, funnel_touches

WORK_MEM = "256MB"


async def project_persons(session: AsyncSession, project_id: str) -> int:
    stmt = select(func.count(func.distinct(events.c.person_id))).where(
        events.c.project_id == project_id
    )
    return int(await session.scalar(stmt) or 0)


def _as_text(column: Any) -> Any:
    """A JSON column as its text: decoded here with orjson, cheaper on large reports than the
    driver's per-value JSON hook."""
    return cast(column, Text)


async def entries_in_range(
    session: AsyncSession, funnel_id: str, start_us: int, end_us: int
) -> dict[str, list[Entry]]:
    e = funnel_entries.c
    stmt = select(
        e.person_id, e.t0_us, _as_text(e.step_times), e.disqualified, _as_text(e.step_values)
    ).where(e.funnel_id == funnel_id, e.t0_us >= start_us, e.t0_us < end_us)
    # Newest row first: of two entries alike in everything the count looks at (same step
    # times, other values), the report takes the first, as PostgreSQL's does (reports.sql).
    stmt = stmt.order_by(e.id.desc())
    found: dict[str, list[Entry]] = defaultdict(list)
    result = await session.execute(stmt)
    for person, t0, times, disqualified, values in result:
        decoded = orjson.loads(values)
        found[person].append(
            Entry(
                t0,
                tuple(orjson.loads(times)),
                disqualified,
                {k: tuple(v) for k, v in decoded.items()} if decoded else {},
            )
        )
    return found


async def events_in_range(
    session: AsyncSession, project_id: str, start_us: int, end_us: int
) -> dict[str, list[PersonEvent]]:
    """The project's stored events at instants in [start, end), per person (for reports
    that evaluate raw events: ad-hoc breakdowns, global filters, all-events attribution)."""
    v = events.c
    stmt = select(
        v.person_id, v.event_id, v.ts_us, v.name, _as_text(v.properties), _as_text(v.context)
    ).where(v.project_id == project_id, v.ts_us >= start_us, v.ts_us < end_us)
    found: dict[str, list[PersonEvent]] = defaultdict(list)
    result = await session.execute(stmt)
    for person, event_id, ts, name, properties, context in result:
        found[person].append(
            PersonEvent(event_id, ts, name, orjson.loads(properties), orjson.loads(context))
        )
    return found


async def touches_in_range(
    session: AsyncSession, funnel_id: str, start_us: int, end_us: int
) -> dict[str, list[Touch]]:
    t = funnel_touches.c
    stmt = select(t.person_id, t.ts_us, t.seq, _as_text(t["values"])).where(
        t.funnel_id == funnel_id, t.ts_us >= start_us, t.ts_us < end_us
    )
    found: dict[str, list[Touch]] = defaultdict(list)
    result = await session.execute(stmt)
    for person, ts, seq, values in result:
        found[person].append(Touch(ts, seq, orjson.loads(values)))
    return found


async def change_stamp(session: AsyncSession, funnel_id: str) -> tuple[int, int]:
    """Moves whenever an aggregator commits a change to this funnel's stored progress (its
    change counters are written in the same transaction as the progress)."""
    c = funnel_changes.c
    row = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(c.changes), 0)).where(
                c.funnel_id == funnel_id
            )
        )
    ).one()
    return int(row[0]), int(row[1])


async def first_entry_from(
    session: AsyncSession, funnel_id: str, from_us: int, before_us: int | None = None
) -> int | None:
    """The earliest entry start at or after ``from_us`` (and before ``before_us``)."""
    e = funnel_entries.c
    stmt = select(func.min(e.t0_us)).where(e.funnel_id == funnel_id, e.t0_us >= from_us)
    if before_us is not None:
        stmt = stmt.where(e.t0_us < before_us)
    found = await session.scalar(stmt)
    return None if found is None else int(found)


async def over_a_range(
    session: AsyncSession, statement: str, params: Mapping[str, Any]
) -> Sequence[Any]:
    """The rows of a statement over a whole range of entries.

    Its transaction sorts and hashes in memory rather than in temp files, and compiles
    nothing: for these statements, bound by sorting, JIT compilation cost more than it saved.
    """
    await session.execute(
        text("SELECT set_config('work_mem', :work_mem, true), set_config('jit', 'off', true)"),
        {"work_mem": WORK_MEM},
    )
    return (await session.execute(text(statement), dict(params))).all()
