"""Planner statistics of the tables every batch writes (PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import is_postgres

HOT_TABLES = ("events", "funnel_entries", "funnel_touches")
# Every batch looks its ids up in identity_links (and resolves claims in identity_claims)
# with arrays of ids. Planned on the statistics of an empty table, each lookup compares every
# row with every id, its time growing with the table; once they were taken of a few rows the
# planner scales them with the table's size, so these are analyzed while young only.
YOUNG_TABLES = ("identity_links", "identity_claims", "identity_refusals")
YOUNG_ROWS = 1000


async def analyze_if_stale(session: AsyncSession) -> list[str]:
    """ANALYZE hot tables whose statistics lag far behind their size, and young tables whose
    statistics were taken of almost nothing (PostgreSQL only).

    Autovacuum catches up within minutes; until then a young, fast-growing table has
    statistics that make the planner scan a whole funnel instead of looking persons up.
    """
    if not is_postgres(session):
        return []
    rows = await session.execute(
        text(
            "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
            " WHERE (s.relname = ANY(:hot)"
            " AND s.n_mod_since_analyze > 1000 + 0.2 * GREATEST(c.reltuples, 0))"
            " OR (s.relname = ANY(:young) AND s.n_mod_since_analyze > :rows"
            " AND c.reltuples < :rows)"
        ),
        {"hot": list(HOT_TABLES), "young": list(YOUNG_TABLES), "rows": YOUNG_ROWS},
    )
    found = {name for (name,) in rows}
    # only our own, known names
    stale = [name for name in (*HOT_TABLES, *YOUNG_TABLES) if name in found]
    for name in stale:
        await session.execute(text(f"ANALYZE {name}"))
    return stale
