"""The tables the migrations build are those shared/tables.py defines, on both databases."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData

from shared.db import create_engine
from shared.tables import metadata

OPTIONS = {"compare_type": True, "compare_server_default": True}


async def differences(url: str, target: MetaData) -> list[Any]:
    """What autogenerate would write to make the database at ``url`` match ``target``."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c, opts=OPTIONS), target)
            )
    finally:
        await engine.dispose()


async def test_the_migrated_tables_equal_the_table_definitions(database_url):
    assert await differences(database_url, metadata) == []


async def test_a_column_no_migration_adds_is_a_difference(database_url):
    surplus = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(surplus)
    surplus.tables["events"].append_column(Column("surplus", Integer))
    found = await differences(database_url, surplus)
    assert [(d[0], d[2], d[3].name) for d in found] == [("add_column", "events", "surplus")]
