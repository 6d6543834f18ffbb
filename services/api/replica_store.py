"""The columnar replica's DuckDB database: one process's, in memory.

Per held funnel version three tables (:class:`services.api.reports.columnar.Tables`): entries,
touches and the labels of the touches' values. Rows come in as columns (one Python list per
column, unnested side by side in one statement per table), persons and labels already coded
as integers; the durations and numeric values are computed by DuckDB on the way in. Writes
run one at a time (one lock), each in a DuckDB transaction; reads on cursors of their own
run beside them.
"""
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Sequence
from typing import Any

import duckdb

from services.api.reports import columnar
from shared.funnel import FunnelDefinition

# The staged columns of entries (as ``repository.replica.entry_columns`` returns them).
_STAGED = [("person", "INTEGER"), ("t0", "BIGINT"), ("lft", "BIGINT"), ("rgt", "BIGINT")]
_STAGED += [("reached", "UTINYINT"), ("dq", "BOOLEAN")]


class Store:
    """The replica's tables; every method blocks (call it from a worker thread)."""

    def __init__(self) -> None:
        self._db = duckdb.connect(":memory:")
        self._write = threading.Lock()
        self._names = itertools.count()

    def create(self, definition: FunnelDefinition) -> columnar.Tables:
        """Empty tables for a funnel version, under names never used before."""
        k = next(self._names)
        tables = columnar.Tables(f"e{k}", f"t{k}", f"l{k}")
        entries = ", ".join(f"{c} {t}" for c, t in columnar.entry_schema(definition))
        touches = ", ".join(f"{c} {t}" for c, t in columnar.TOUCH_SCHEMA)
        with self._write:
            self._db.execute(f"CREATE TABLE {tables.entries} ({entries})")
            self._db.execute(f"CREATE TABLE {tables.touches} ({touches})")
            self._db.execute(f"CREATE TABLE {tables.labels} (code INTEGER, label VARCHAR)")
        return tables

    def drop(self, tables: columnar.Tables) -> None:
        with self._write:
            for name in (tables.entries, tables.touches, tables.labels):
                self._db.execute(f"DROP TABLE IF EXISTS {name}")

    def replace(
        self,
        tables: columnar.Tables,
        definition: FunnelDefinition,
        persons: Sequence[int] | None,
        entries: list[list[Any]],
        touches: list[list[Any]],
        labels: Sequence[tuple[int, str]],
    ) -> None:
        """In one transaction: delete the rows of ``persons`` (None: they have none yet),
        insert these columns (persons and values coded) and the new labels."""
        with self._write:
            db = self._db.cursor()
            try:
                db.execute("BEGIN")
                if persons:
                    for table in (tables.entries, tables.touches):
                        db.execute(
                            f"DELETE FROM {table} WHERE person IN (SELECT unnest($k))",
                            {"k": list(persons)},
                        )
                _insert(
                    db,
                    tables.labels,
                    [("code", "INTEGER"), ("label", "VARCHAR")],
                    None,
                    [
                        [c for c, _ in labels],
                        [label for _, label in labels],
                    ],
                )
                _insert(
                    db,
                    tables.entries,
                    _staged(definition),
                    columnar.entry_expressions(definition),
                    entries,
                )
                _insert(db, tables.touches, columnar.TOUCH_SCHEMA, None, touches)
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    db.execute("ROLLBACK")
                raise
            finally:
                db.close()

    def read(self, statement: str, params: dict[str, Any]) -> list[Any]:
        cursor = self._db.cursor()  # a connection of its own: reads run beside the writer
        try:
            return cursor.execute(statement, params).fetchall()
        finally:
            cursor.close()

    def read_all(self, statements: Sequence[tuple[str, dict[str, Any]]]) -> list[list[Any]]:
        """The rows of each statement, all read in one transaction (one snapshot)."""
        cursor = self._db.cursor()
        try:
            cursor.execute("BEGIN TRANSACTION")
            found = [cursor.execute(s, p).fetchall() for s, p in statements]
            cursor.execute("COMMIT")
            return found
        finally:
            cursor.close()

    def memory_bytes(self) -> int:
        found = self.read("SELECT sum(memory_usage_bytes) FROM duckdb_memory()", {})
        return int(found[0][0] or 0)

    def close(self) -> None:
        """Close DuckDB once no write runs (a read still running keeps its own cursor)."""
        with self._write, contextlib.suppress(duckdb.Error):
            self._db.close()


def _staged(definition: FunnelDefinition) -> list[tuple[str, str]]:
    n = len(definition.steps)
    staged = [*_STAGED, *((f"s{k}", "BIGINT") for k in range(1, n + 1))]
    if definition.value_property is not None:
        staged += [(f"v{k}", "VARCHAR") for k in range(1, n + 1)]
    return staged


def _insert(
    db: duckdb.DuckDBPyConnection,
    table: str,
    staged: Sequence[tuple[str, str]],
    expressions: Sequence[str] | None,
    columns: list[list[Any]],
) -> None:
    """Insert rows given as one list per staged column, unnested side by side (one
    statement), each column of the table the expression over the staged ones."""
    if not columns or not columns[0]:
        return
    values = ", ".join(f"unnest($c{i})::{t} AS {c}" for i, (c, t) in enumerate(staged))
    chosen = ", ".join(expressions) if expressions is not None else "*"
    params = {f"c{i}": column for i, column in enumerate(columns)}
    db.execute(f"INSERT INTO {table} SELECT {chosen} FROM (SELECT {values})", params)
