"""Both ids an event carries are stored (migration 0009), so that identity merge can link
persons from the stored events alone, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from alembic import command
from sqlalchemy import select, text

from services.aggregator.processor import Processor
from shared.db import alembic_config, create_engine, migrate
from shared.tables import events
from tests.databases import postgres_database
from tests.helpers import canonical, records

T0 = 1_790_000_000


async def test_identify_alias_and_group_are_stored_with_both_ids_and_their_properties(sessions):
    anonymous = "anon-1"
    batch = [
        replace(canonical("u1", "identify", T0, email="u1@example.com"), anonymous_id=anonymous),
        replace(canonical("u1", "alias", T0 + 1, previous_id=anonymous), anonymous_id=anonymous),
        replace(canonical("u1", "group", T0 + 2, group_id="acme", employees=50)),
        replace(
            canonical(anonymous, "page_view", T0 - 5, path="/"),
            user_id=None,
            anonymous_id=anonymous,
        ),
    ]
    await Processor(sessions, "ids", horizon_us=lambda: 0).apply(records(batch), {})
    async with sessions() as session:
        rows = {
            r.name: r
            for r in await session.execute(
                select(
                    events.c.name,
                    events.c.person_id,
                    events.c.user_id,
                    events.c.anonymous_id,
                    events.c.properties,
                )
            )
        }
    assert (rows["identify"].user_id, rows["identify"].anonymous_id) == ("u1", anonymous)
    assert rows["identify"].properties == {"email": "u1@example.com"}
    assert (rows["alias"].user_id, rows["alias"].properties) == ("u1", {"previous_id": anonymous})
    assert (rows["group"].user_id, rows["group"].anonymous_id) == ("u1", None)
    assert rows["group"].properties == {"group_id": "acme", "employees": 50}
    page = rows["page_view"]
    assert (page.person_id, page.user_id, page.anonymous_id) == (anonymous, None, anonymous)


def _collations() -> dict[str, str | None]:
    with postgres_database() as url:
        migrate(url)

        async def read() -> dict[str, str | None]:
            engine = create_engine(url)
            try:
                async with engine.connect() as conn:
                    found = await conn.execute(
                        text(
                            "SELECT column_name, collation_name FROM information_schema.columns"
                            " WHERE table_name = 'events'"
                            " AND column_name IN ('person_id', 'user_id', 'anonymous_id')"
                        )
                    )
                    return {str(row[0]): row[1] for row in found}
            finally:
                await engine.dispose()

        before = asyncio.run(read())

        command.downgrade(alembic_config(url), "0008")
        command.upgrade(alembic_config(url), "head")
        assert asyncio.run(read()) == before
        return before


def test_the_ids_are_compared_in_byte_order_on_postgresql_and_the_migration_undoes():
    assert _collations() == {"person_id": "C", "user_id": "C", "anonymous_id": "C"}
