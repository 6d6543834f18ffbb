"""Re-marketing timers: pending ones kept equal to the live occurrences, due ones claimed."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator.changes import PendingTimer
from services.aggregator.model import DueTimer
from services.aggregator.repository.scan import CHUNK
from shared.db import insert_ignoring, is_postgres
from shared.funnel import Entry
from shared.tables import funnel_entries, remarketing_timers

_KEY = ["funnel_id", "person_id", "rule", "entry_t0_us", "occurrence"]


async def replace_pending(
    session: AsyncSession,
    funnel_id: str,
    people: Sequence[str],
    since_us: int,
    timers: Sequence[PendingTimer],
    now_us: int,
) -> None:
    """Pending timers of entries from ``since_us`` on become exactly ``timers``; fired ones
    stay as they are. ``people`` are those who may have stored timers."""
    t = remarketing_timers.c
    for i in range(0, len(people), CHUNK):
        await session.execute(
            remarketing_timers.delete().where(
                t.funnel_id == funnel_id,
                t.person_id.in_(people[i : i + CHUNK]),
                t.status == "pending",
                t.entry_t0_us >= since_us,
            )
        )
    rows = [
        {
            "funnel_id": funnel_id,
            "person_id": p.person_id,
            "rule": p.rule,
            "entry_t0_us": p.entry_t0,
            "occurrence": p.occurrence,
            "due_us": p.due_us,
            "fire_at_us": p.fire_at_us,
            "status": "pending",
            "updated_at_us": now_us,
        }
        for p in timers
    ]
    if rows:
        await session.execute(
            insert_ignoring(session, remarketing_timers).on_conflict_do_nothing(
                index_elements=_KEY
            ),
            rows,
        )


async def due_timers(session: AsyncSession, now_us: int, limit: int) -> list[DueTimer]:
    """Pending timers whose firing time has come, earliest first; on PostgreSQL locked,
    skipping those another worker holds."""
    t = remarketing_timers.c
    stmt = (
        select(t.id, t.funnel_id, t.person_id, t.rule, t.entry_t0_us, t.occurrence, t.due_us)
        .where(t.status == "pending", t.fire_at_us <= now_us)
        .order_by(t.fire_at_us)
        .limit(limit)
    )
    if is_postgres(session):
        stmt = stmt.with_for_update(skip_locked=True)
    return [DueTimer(*r) for r in await session.execute(stmt)]


async def mark_timer(session: AsyncSession, timer_id: int, outcome: str, now_us: int) -> None:
    """Record what became of a due timer: ``fired`` or ``skipped``."""
    await session.execute(
        update(remarketing_timers)
        .where(remarketing_timers.c.id == timer_id)
        .values(status=outcome, updated_at_us=now_us)
    )


async def stored_entry(session: AsyncSession, timer: DueTimer) -> Entry | None:
    """The timer's entry as stored now, if it still is."""
    e = funnel_entries.c
    row = (
        await session.execute(
            select(e.step_times, e.step_values).where(
                e.funnel_id == timer.funnel_id,
                e.person_id == timer.person_id,
                e.t0_us == timer.entry_t0_us,
            )
        )
    ).first()
    if row is None:
        return None
    values = {k: tuple(v) for k, v in row.step_values.items()}
    return Entry(timer.entry_t0_us, tuple(row.step_times), False, values)


async def fired_keys(
    session: AsyncSession, funnel_id: str, people: Sequence[str]
) -> list[tuple[str, tuple[str, int, int]]]:
    """The (person, (rule, entry start, occurrence)) of these persons' timers that fired."""
    t = remarketing_timers.c
    found = []
    for i in range(0, len(people), CHUNK):
        rows = await session.execute(
            select(t.person_id, t.rule, t.entry_t0_us, t.occurrence).where(
                t.funnel_id == funnel_id,
                t.person_id.in_(people[i : i + CHUNK]),
                t.status == "fired",
            )
        )
        found += [(person, (rule, t0, n)) for person, rule, t0, n in rows]
    return found
