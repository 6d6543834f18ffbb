"""The columnar replica's DuckDB database: one process's, in memory.

Per held funnel version three tables (:class:`services.api.reports.columnar.Tables`): entries,
touches and the labels of the touches' values; one table of person ids and their integer
keys for all. Rows are staged as they come from the database, either as columns (one Python
list per column, unnested side by side in one statement) or as a CSV file PostgreSQL wrote
(``COPY``, read by DuckDB's reader: no Python per row); DuckDB then codes persons and labels,
computes durations and numeric values and inserts, in one transaction. Writes run one at a
time (one lock); reads on cursors of their own run beside them.
"""
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb

from services.api.reports import columnar
from shared.funnel import FunnelDefinition

# The staged columns of entries (as ``repository.replica.entry_columns`` returns them,
# after the person: its id, or its key).
_STAGED = [("t0", "BIGINT"), ("lft", "BIGINT"), ("rgt", "BIGINT")]
_STAGED += [("reached", "UTINYINT"), ("dq", "BOOLEAN")]
_STAGED_TOUCHES = [("prop", "UTINYINT"), ("ts", "BIGINT"), ("prev", "BIGINT"), ("nxt", "BIGINT")]
_STAGED_TOUCHES += [("v", "VARCHAR")]

Staged = list[list[Any]] | Path  # columns, or a CSV file of the same columns


class Store:
    """The replica's tables; every method blocks (call it from a worker thread)."""

    def __init__(self) -> None:
        self._db = duckdb.connect(":memory:")
        self._db.execute("CREATE TABLE persons (id VARCHAR, key INTEGER)")
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

    def load(
        self,
        tables: columnar.Tables,
        definition: FunnelDefinition,
        entries: Staged,
        touches: Staged,
    ) -> list[tuple[str, int]]:
        """In one transaction: insert the staged rows of persons that have none yet (ids as
        text), persons new to the replica and values coded here; those persons and keys."""
        with self._transaction() as db:
            _stage(db, "se", _staged(definition, "VARCHAR"), entries)
            _stage(db, "st", _staged_touches("VARCHAR"), touches)
            first = db.execute("SELECT coalesce(max(key) + 1, 0) FROM persons").fetchall()[0][0]
            _code(db, "persons", "id", "key", "SELECT person FROM se UNION SELECT person FROM st")
            self._insert(
                db,
                tables,
                definition,
                "(SELECT p.key AS pk, se.* FROM se JOIN persons p ON p.id = se.person)",
                "JOIN persons p ON p.id = st.person",
                "p.key",
            )
            found = db.execute("SELECT id, key FROM persons WHERE key >= $k", {"k": first})
            return [(i, int(k)) for i, k in found.fetchall()]

    def apply(
        self,
        tables: columnar.Tables,
        definition: FunnelDefinition,
        keys: Sequence[int],
        new: Sequence[tuple[str, int]],
        entries: list[list[Any]],
        touches: list[list[Any]],
    ) -> None:
        """In one transaction: replace the rows of the persons ``keys`` by the staged ones
        (persons as keys; ``new``: the persons and keys the replica has not held yet)."""
        with self._transaction() as db:
            for table in (tables.entries, tables.touches):
                db.execute(
                    f"DELETE FROM {table} WHERE person IN (SELECT unnest($k))", {"k": list(keys)}
                )
            if new:
                db.execute(
                    "INSERT INTO persons SELECT unnest($i), unnest($k)",
                    {"i": [i for i, _ in new], "k": [k for _, k in new]},
                )
            _stage(db, "se", _staged(definition, "INTEGER"), entries)
            _stage(db, "st", _staged_touches("INTEGER"), touches)
            self._insert(
                db, tables, definition, "(SELECT person AS pk, * FROM se)", "", "st.person"
            )

    @staticmethod
    def _insert(
        db: duckdb.DuckDBPyConnection,
        tables: columnar.Tables,
        definition: FunnelDefinition,
        entries: str,
        join: str,
        person: str,
    ) -> None:
        _code(db, tables.labels, "label", "code", "SELECT v FROM st")
        chosen = ", ".join(["pk", *columnar.entry_expressions(definition)[1:]])
        db.execute(f"INSERT INTO {tables.entries} SELECT {chosen} FROM {entries}")
        db.execute(
            f"INSERT INTO {tables.touches} SELECT {person}, prop, ts, prev, nxt, l.code "
            f"FROM st {join} JOIN {tables.labels} l ON l.label = st.v"
        )
        db.execute("DROP TABLE se")
        db.execute("DROP TABLE st")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor in a DuckDB transaction, the only writer meanwhile."""
        with self._write:
            db = self._db.cursor()
            try:
                db.execute("BEGIN")
                yield db
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

    def memory_bytes(self) -> int:
        found = self.read("SELECT sum(memory_usage_bytes) FROM duckdb_memory()", {})
        return int(found[0][0] or 0)

    def close(self) -> None:
        """Close DuckDB once no write runs (a read still running keeps its own cursor)."""
        with self._write, contextlib.suppress(duckdb.Error):
            self._db.close()


def _staged(definition: FunnelDefinition, person: str) -> list[tuple[str, str]]:
    n = len(definition.steps)
    staged = [("person", person), *_STAGED, *((f"s{k}", "BIGINT") for k in range(1, n + 1))]
    if definition.value_property is not None:
        staged += [(f"v{k}", "VARCHAR") for k in range(1, n + 1)]
    return staged


def _staged_touches(person: str) -> list[tuple[str, str]]:
    return [("person", person), *_STAGED_TOUCHES]


def _stage(
    db: duckdb.DuckDBPyConnection, name: str, staged: Sequence[tuple[str, str]], rows: Staged
) -> None:
    """A temporary table of the staged rows: Python columns unnested side by side, or a
    CSV file as PostgreSQL's COPY writes it (NULL unquoted and empty, "" an empty text)."""
    if isinstance(rows, Path):
        columns = ", ".join(f"'{c}': '{t}'" for c, t in staged)
        path = str(rows).replace("'", "''")
        db.execute(
            f"CREATE TEMP TABLE {name} AS SELECT * FROM read_csv('{path}', header = false, "
            f"columns = {{{columns}}}, allow_quoted_nulls = false, auto_detect = false)"
        )
        return
    if not rows or not rows[0]:
        empty = ", ".join(f"{c} {t}" for c, t in staged)
        db.execute(f"CREATE TEMP TABLE {name} ({empty})")
        return
    values = ", ".join(f"unnest($c{i})::{t} AS {c}" for i, (c, t) in enumerate(staged))
    params = {f"c{i}": column for i, column in enumerate(rows)}
    db.execute(f"CREATE TEMP TABLE {name} AS SELECT {values}", params)


def _code(db: duckdb.DuckDBPyConnection, table: str, name: str, code: str, values: str) -> None:
    """Give the values not yet in ``table`` the next integer codes."""
    db.execute(
        f"INSERT INTO {table} ({name}, {code}) "
        f"SELECT x, (SELECT coalesce(max({code}) + 1, 0) FROM {table}) + "
        f"row_number() OVER (ORDER BY x) - 1 "
        f"FROM (SELECT DISTINCT x FROM ({values}) s(x) WHERE x IS NOT NULL) n "
        f"WHERE x NOT IN (SELECT {name} FROM {table})"
    )
