"""Planner statistics of the tables every batch writes (PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import is_postgres

HOT_TABLES = ("events", "funnel_entries", "funnel_touches")


async def analyze_if_stale(session: AsyncSession) -> list[str]:
    """ANALYZE hot tables whose statistics lag far behind their size (PostgreSQL only).

    Autovacuum catches up within minutes; until then a young, fast-growing table has
    statistics that make the planner scan a whole funnel instead of looking persons up.
    """
    if not is_postgres(session):
        return []
    rows = await session.execute(
        text(
            "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
            " WHERE s.relname = ANY(:tables)"
            " AND s.n_mod_since_analyze > 1000 + 0.2 * GREATEST(c.reltuples, 0)"
        ),
        {"tables": list(HOT_TABLES)},
    )
    found = {name for (name,) in rows}
    stale = [name for name in HOT_TABLES if name in found]  # only our own, known names
    for name in stale:
        await session.execute(text(f"ANALYZE {name}"))
    return stale
