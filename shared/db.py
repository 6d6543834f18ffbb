"""Database engines and migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]
import orjson
from sqlalchemy import JSON, Table, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/funnel.db"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(url: str, **options: Any) -> AsyncEngine:
    """An async engine; on SQLite each transaction is ``BEGIN IMMEDIATE`` (one writer at a time)."""
    options.setdefault("json_serializer", _dumps)
    options.setdefault("json_deserializer", orjson.loads)
    if not is_sqlite(url):
        options.setdefault("pool_size", 10)
        options.setdefault("pool_pre_ping", True)
        return create_async_engine(url, **options)
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": 60}, **options)
    _serialize_sqlite(engine)
    return engine


def _serialize_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling is off so that BEGIN IMMEDIATE below is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def insert_ignoring(session: AsyncSession, table: Any) -> Any:
    """The dialect's INSERT, which offers ``on_conflict_do_nothing`` on both databases."""
    return (pg_insert if is_postgres(session) else sqlite_insert)(table)


async def bulk_insert(
    session: AsyncSession,
    table: Table,
    columns: Sequence[str],
    records: Sequence[tuple[Any, ...]],
    *,
    into: str | None = None,
) -> None:
    """Insert many rows, given as tuples of ``columns``, in the session's transaction.

    On PostgreSQL by binary COPY, several times cheaper per row than a multi-row INSERT for
    the thousands of progress rows a batch writes; elsewhere by executemany. ``into`` names
    another table of the same columns to copy into instead (PostgreSQL only). Tuples rather
    than dicts: a batch builds thousands of them.
    """
    if not records:
        return
    if not is_postgres(session):
        if into is not None:
            raise ValueError("into: PostgreSQL only")
        await session.execute(table.insert(), [dict(zip(columns, r, strict=True)) for r in records])
        return
    documents = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, JSON)]
    if documents:
        records = [_dump_documents(r, documents) for r in records]
    driver = await asyncpg_connection(session)
    await driver.copy_records_to_table(into or table.name, records=records, columns=list(columns))


def _dump_documents(record: tuple[Any, ...], documents: list[int]) -> tuple[Any, ...]:
    row = list(record)
    for i in documents:
        row[i] = _dumps(row[i])
    return tuple(row)


async def asyncpg_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under the session's (PostgreSQL) transaction, begun.

    SQLAlchemy's asyncpg adapter opens the database transaction lazily, at the first
    statement it executes itself: a COPY sent to the bare connection before that would run
    in autocommit, outside the transaction. So one statement goes through SQLAlchemy first.
    """
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    if driver is None:
        raise RuntimeError("the pooled connection has no asyncpg connection")
    if not driver.is_in_transaction():
        await connection.exec_driver_sql("SELECT 1")
    if not driver.is_in_transaction():
        raise RuntimeError("no transaction is open on the asyncpg connection")
    return driver


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the schema to the newest migration (safe to run again)."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")


# SQLSTATE classes that say the server, not the statement, is at fault: connection (08),
# insufficient resources (53), object not in prerequisite state (55, e.g. a lock not
# available), operator intervention (57: shutting down, cannot connect now, canceled),
# system error (58), transaction rollback (40: serialization failure, deadlock), internal (XX).
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "55", "57", "58", "40", "XX"})


def is_unavailable(exc: BaseException) -> bool:
    """Whether an error says the database is unreachable, going away or overloaded (so the
    same work may succeed later), rather than that a statement or its data was refused.

    Looks through SQLAlchemy's wrappers and the chain of causes: a transaction whose data
    was refused and whose connection then broke is unavailable (retried, and refused again
    on a working connection). asyncpg's client-side ``DataError`` (a value it cannot encode)
    is an ``InterfaceError`` to SQLAlchemy, hence judged by the innermost error first.
    """
    verdicts = [_verdict(link) for link in _chain(exc)]
    if True in verdicts:
        return True
    if False in verdicts:
        return False
    return isinstance(
        exc,
        sa_exc.OperationalError
        | sa_exc.InterfaceError
        | sa_exc.DisconnectionError
        | sa_exc.TimeoutError,
    ) or bool(getattr(exc, "connection_invalidated", False))


def _verdict(link: BaseException) -> bool | None:
    """True: unavailable; False: refused; None: this link does not tell."""
    if isinstance(link, asyncpg.exceptions.DataError | asyncpg.exceptions._base.DataError):
        return False
    if isinstance(link, asyncpg.PostgresError):
        return str(getattr(link, "sqlstate", "") or "")[:2] in _UNAVAILABLE_CLASSES
    if isinstance(link, asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError):
        return True  # the connection is closed, or in a state it cannot be used in
    if isinstance(link, sqlite3.OperationalError):
        return True  # locked, busy, I/O error, cannot open the file
    if isinstance(link, sqlite3.DatabaseError):
        return False  # integrity, data, programming errors
    if isinstance(link, OSError | TimeoutError):
        return True  # refused, reset, unreachable, timed out
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending = [exc]
    while pending and len(seen) < 16:
        link = pending.pop(0)
        if id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        inner = [getattr(link, "orig", None), link.__cause__, link.__context__]
        pending.extend(e for e in inner if isinstance(e, BaseException))
