"""Statements the repositories share: per-person range scans and chunked deletes by id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ARRAY, Text, bindparam, delete, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import is_postgres

CHUNK = 500  # persons or ids per statement


def per_person(
    session: AsyncSession, table: Any, columns: Sequence[str], time: str, **scope: str
) -> Any:
    """``columns`` of ``table``'s rows in ``scope`` (column = value) of the persons bound
    as ``people`` whose ``time`` column is at least the bound ``since``, found by one index
    range scan per person (on the scope, person and time) whatever the statistics say.

    With ``person_id IN (...)``, PostgreSQL on a young, unanalyzed table (and, with a time
    bound as well, on one with young statistics) read the whole scope (every event of the
    project, every row of the funnel) once per batch. So, on PostgreSQL, a LATERAL subquery
    per person, which OFFSET 0 keeps from being flattened into a hash join.
    """
    wanted = [table.c[c] for c in columns]
    where = [table.c[k] == v for k, v in scope.items()]
    where.append(table.c[time] >= bindparam("since"))
    if not is_postgres(session):
        return select(*wanted).where(
            *where, table.c.person_id.in_(bindparam("people", expanding=True))
        )
    people = bindparam("people", type_=ARRAY(Text))
    person = func.unnest(people).table_valued("person_id").render_derived()
    found = (
        select(*wanted).where(*where, table.c.person_id == person.c.person_id).offset(0).lateral()
    )
    return select(found).select_from(person).join(found, true())


async def delete_ids(session: AsyncSession, table: Any, ids: Sequence[int]) -> None:
    for i in range(0, len(ids), CHUNK):
        await session.execute(delete(table).where(table.c.id.in_(ids[i : i + CHUNK])))
