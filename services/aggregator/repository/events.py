"""Stored events: deduplicated inserts, per-person histories, the backfill's persons, purge."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator.engine import PersonEvent
from services.aggregator.model import ActiveFunnel
from services.aggregator.person_cache import PersonKey
from services.aggregator.repository.scan import CHUNK, per_person
from shared.db import asyncpg_connection, bulk_insert, insert_ignoring, is_postgres
from shared.events import CanonicalEvent, to_micros
from shared.tables import events

EVENT_COLUMNS = (
    "project_id",
    "event_id",
    "person_id",
    "name",
    "ts_us",
    "received_at_us",
    "properties",
    "context",
    "user_id",
    "anonymous_id",
)


async def store_events(
    session: AsyncSession, batch: Sequence[CanonicalEvent]
) -> dict[PersonKey, list[PersonEvent]]:
    """Insert events not seen before (by project and event id); return, per person who had
    any, the events stored by this call, as stored (the last of a batch's twins)."""
    if not batch:
        return {}
    unique = {(e.project_id, e.event_id): e for e in batch}
    if is_postgres(session):
        found: Iterable[Any] = await _copy_events(session, list(unique.values()))
    else:
        stmt = (
            insert_ignoring(session, events)
            .on_conflict_do_nothing(index_elements=["project_id", "event_id"])
            .returning(events.c.project_id, events.c.event_id)
        )
        found = await session.execute(
            stmt, [dict(zip(EVENT_COLUMNS, _event_row(e), strict=True)) for e in unique.values()]
        )
    stored: dict[PersonKey, list[PersonEvent]] = defaultdict(list)
    for project_id, event_id in found:
        e = unique[(project_id, event_id)]
        stored[(project_id, e.person_id)].append(
            PersonEvent(event_id, to_micros(e.timestamp), e.event, e.properties, e.context)
        )
    return stored


def _event_row(e: CanonicalEvent) -> tuple[Any, ...]:
    return (
        e.project_id,
        e.event_id,
        e.person_id,
        e.event,
        to_micros(e.timestamp),
        to_micros(e.received_at),
        e.properties,
        e.context,
        e.user_id,
        e.anonymous_id,
    )


async def _copy_events(session: AsyncSession, batch: list[CanonicalEvent]) -> list[Any]:
    """PostgreSQL: COPY the batch into a transaction-scoped scratch table, then move what is
    new into ``events`` in one statement (a multi-row INSERT costs far more per row)."""
    driver = await asyncpg_connection(session)
    await driver.execute(
        "CREATE TEMP TABLE IF NOT EXISTS incoming_events"
        " (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    rows = [_event_row(e) for e in batch]
    await bulk_insert(session, events, EVENT_COLUMNS, rows, into="incoming_events")
    return list(await driver.fetch(_MOVE_NEW_EVENTS))


_EVENT_COLUMN_LIST = ", ".join(EVENT_COLUMNS)  # fixed names, no input
_MOVE_NEW_EVENTS = (
    f"INSERT INTO events ({_EVENT_COLUMN_LIST})"  # noqa: S608
    f" SELECT {_EVENT_COLUMN_LIST} FROM incoming_events"
    " ON CONFLICT (project_id, event_id) DO NOTHING RETURNING project_id, event_id"
)


async def person_events(
    session: AsyncSession, project_id: str, persons: Iterable[str], since_us: int
) -> dict[str, list[PersonEvent]]:
    """These persons' stored events from ``since_us`` on."""
    found: dict[str, list[PersonEvent]] = defaultdict(list)
    people = sorted(set(persons))
    columns = ("person_id", "event_id", "ts_us", "name", "properties", "context")
    stmt = per_person(session, events, columns, "ts_us", project_id=project_id)
    for i in range(0, len(people), CHUNK):
        for r in await session.execute(stmt, {"people": people[i : i + CHUNK], "since": since_us}):
            found[r.person_id].append(
                PersonEvent(r.event_id, r.ts_us, r.name, r.properties, r.context)
            )
    return found


async def backfill_persons(session: AsyncSession, funnel: ActiveFunnel, limit: int) -> list[str]:
    """The next persons of the funnel's project past its backfill cursor."""
    stmt = (
        select(events.c.person_id)
        .where(events.c.project_id == funnel.project_id)
        .distinct()
        .order_by(events.c.person_id)
        .limit(limit)
    )
    if funnel.backfill_cursor is not None:
        stmt = stmt.where(events.c.person_id > funnel.backfill_cursor)
    return list((await session.scalars(stmt)).all())


async def delete_events_before(session: AsyncSession, horizon_us: int) -> int:
    result: Any = await session.execute(delete(events).where(events.c.ts_us < horizon_us))
    return int(result.rowcount or 0)


async def opening_events(
    session: AsyncSession, project_id: str, person_ids: Sequence[str], ts_us: int
) -> list[tuple[str, Any]]:
    """The (name, properties) of the events of these ids (one person's) at this instant,
    in event id order."""
    rows = await session.execute(
        select(events.c.event_id, events.c.name, events.c.properties).where(
            events.c.project_id == project_id,
            events.c.person_id.in_(list(person_ids)),
            events.c.ts_us == ts_us,
        )
    )
    return [(name, properties) for _, name, properties in sorted(rows, key=lambda r: r[0])]
