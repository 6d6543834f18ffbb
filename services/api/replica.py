"""The API process's columnar replica of stored progress: DuckDB, in memory, in-process.

Per funnel version it holds the bounds layout of :mod:`services.api.reports.columnar`
(entries with their counted-interval bounds, touches with their neighbours' instants,
integer persons), made from the funnel's stored entries and touches; SQLite or PostgreSQL
stay the record. It follows the database through the progress log (migration 0012): the
aggregator appends the (funnel, person) pairs each batch changed in the batch's transaction;
the replica reads the log's new rows (every ``poll_s``, and before each report it computes),
re-reads those persons' rows, recomputes their bounds and replaces their rows in one DuckDB
transaction. A funnel is loaded whole the first time a report asks for it and again after
a redefinition (a new version); a report for it falls back to the database meanwhile.

``complete_to_us``: the freshness instant read just before the replica's latest log read,
so every event acknowledged before it is in the replica (the instant is advanced in the
transactions that wrote those events' progress, which the log read sees).

The log is purged of rows older than ``log_keep_s``; a replica whose latest successful read
is older than half that drops what it holds and loads funnels again on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from services.api.freshness import derive
from services.api.reports import columnar, sql
from services.api.reports.forecast import PipelineTally
from services.api.reports.python import Breakdown, FunnelReport, Window
from services.api.repository import Sessions, freshness
from services.api.repository import replica as repository
from shared.clock import US, now_us
from shared.funnel import CountMode, Entry, FunnelDefinition, Touch

log = logging.getLogger(__name__)

LOAD_SLICE = 20_000  # persons read per transaction when a funnel is loaded whole

SCHEMA = (
    "CREATE TABLE entries (funnel INTEGER, person INTEGER, t0 BIGINT, lft BIGINT, rgt BIGINT, "
    "reached INTEGER, disqualified BOOLEAN, st BIGINT[], x DOUBLE[])",
    "CREATE TABLE touches (funnel INTEGER, person INTEGER, prop SMALLINT, ts BIGINT, "
    "prev BIGINT, nxt BIGINT, v VARCHAR)",
)


@dataclass(frozen=True, slots=True)
class _Held:
    version: int
    definition: FunnelDefinition


class Replica:
    """One process's replica; all DuckDB work runs in worker threads, writes one at a time."""

    def __init__(
        self,
        sessions: Sessions,
        group_id: str,
        *,
        poll_s: float = 0.2,
        log_keep_s: float = 3600.0,
        load_slice: int = LOAD_SLICE,
    ) -> None:
        self._sessions = sessions
        self._group_id = group_id
        self._poll_s = poll_s
        self._load_slice = load_slice
        self._keep_us = int(log_keep_s * US)
        self._db = duckdb.connect(":memory:")
        for statement in SCHEMA:
            self._db.execute(statement)
        self._write = threading.Lock()
        self._persons: dict[str, int] = {}
        self._funnels: dict[str, int] = {}  # funnel id -> its key in the tables
        self._held: dict[str, _Held] = {}
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[str, set[str]] = {}  # funnel being loaded -> persons changed
        self._position: int | None = None  # where the next log read starts
        self._seen: set[int] = set()  # ids read at or above the position (PostgreSQL)
        self._polled_at_us = 0  # when the latest successful log read began
        self._purged_at = time.monotonic()
        self.complete_to_us: int | None = None
        self.served = 0  # reports computed here
        self._poll_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # --- serving -------------------------------------------------------------------------

    def holds(self, funnel_id: str, version: int) -> bool:
        held = self._held.get(funnel_id)
        return held is not None and held.version == version

    def want(self, funnel_id: str, version: int, definition: FunnelDefinition) -> None:
        """Load the funnel (this version) in the background unless held or loading."""
        if self.holds(funnel_id, version) or funnel_id in self._loading:
            return
        task = asyncio.create_task(self.load(funnel_id, version, definition))
        self._loading[funnel_id] = task
        task.add_done_callback(lambda _: self._loading.pop(funnel_id, None))

    async def loaded(self, funnel_id: str) -> None:
        """Wait for the funnel's load under way, if any."""
        task = self._loading.get(funnel_id)
        if task is not None:
            await asyncio.shield(task)

    async def report(
        self,
        funnel_id: str,
        version: int,
        definition: FunnelDefinition,
        window: Window,
        count: CountMode,
        breakdown: Breakdown | None,
    ) -> tuple[FunnelReport, int | None] | None:
        """The report from the replica, caught up with the log first, and the instant it is
        complete to; ``None`` when the replica does not hold this funnel version."""
        await self.catch_up()
        if not self.holds(funnel_id, version):
            return None
        complete = self.complete_to_us
        statement, params = columnar.report_statement(
            self._funnel_key(funnel_id), definition, window, count, breakdown
        )
        rows = await asyncio.to_thread(self._read, statement, params)
        if not self.holds(funnel_id, version):
            return None
        self.served += 1
        return sql.report_from_rows(definition, rows, breakdown), complete

    async def cohort_reports(
        self,
        funnel_id: str,
        version: int,
        definition: FunnelDefinition,
        windows: Sequence[Window],
        count: CountMode,
    ) -> tuple[list[FunnelReport], int | None] | None:
        """One report per window (trends' cohorts, no breakdown, one "now"), from one
        statement after one catch-up, and the instant they are complete to; ``None`` when
        the replica does not hold this funnel version."""
        caught = await self._caught_up(funnel_id, version)
        if caught is None:
            return None
        held, complete, funnel = caught
        if not windows:
            return [], complete
        made = columnar.cohorts_statement(funnel, definition, windows, count)
        rows = await asyncio.to_thread(self._read, *made)
        if self._held.get(funnel_id) is not held:
            return None  # reloaded or redefined meanwhile
        self.served += 1
        by_window: dict[int, list[Any]] = {r[0]: [r[1:]] for r in rows}
        return [
            sql.report_from_rows(definition, by_window.get(k, []), None)
            for k in range(len(windows))
        ], complete

    async def pipeline(
        self,
        funnel_id: str,
        version: int,
        definition: FunnelDefinition,
        window: Window,
        count: CountMode,
    ) -> tuple[PipelineTally, int | None] | None:
        """The pipeline forecast's tally from the replica, caught up with the log first, and
        the instant it is complete to; ``None`` when it does not hold this funnel version."""
        caught = await self._caught_up(funnel_id, version)
        if caught is None:
            return None
        held, complete, funnel = caught
        made = columnar.pipeline_statement(funnel, definition, window, count)
        rows = await asyncio.to_thread(self._read, *made)
        if self._held.get(funnel_id) is not held:
            return None
        self.served += 1
        return sql.pipeline_from_rows(definition, rows), complete

    async def _caught_up(
        self, funnel_id: str, version: int
    ) -> tuple[_Held, int | None, int] | None:
        """After a catch-up: what is held of the funnel (this version), the instant the
        replica is complete to, and the funnel's key; ``None`` when not held."""
        await self.catch_up()
        held = self._held.get(funnel_id)
        if held is None or held.version != version:
            return None
        return held, self.complete_to_us, self._funnel_key(funnel_id)

    def _read(self, statement: str, params: dict[str, Any]) -> list[Any]:
        cursor = self._db.cursor()  # a connection of its own: reads run beside the writer
        try:
            return cursor.execute(statement, params).fetchall()
        finally:
            cursor.close()

    def memory_bytes(self) -> int:
        found = self._read("SELECT sum(memory_usage_bytes) FROM duckdb_memory()", {})
        return int(found[0][0] or 0)

    # --- following the database ----------------------------------------------------------

    async def load(self, funnel_id: str, version: int, definition: FunnelDefinition) -> None:
        """Load the funnel whole (its rows replace any held), a slice of persons at a time,
        each read in a short transaction of its own (on SQLite each holds the write lock):
        the log's position is taken first, so a person changed after their slice was read
        is applied again by the next catch-up, which a report makes before it reads."""
        async with self._poll_lock:
            if self._position is None:
                await self._start_log()
            self._held.pop(funnel_id, None)
            self._pending[funnel_id] = set()  # persons the log names meanwhile
        await asyncio.to_thread(self._clear, funnel_id)
        after: str | None = None
        while True:
            async with self._sessions() as session:
                persons = await repository.persons_after(
                    session, funnel_id, after, self._load_slice
                )
                if not persons:
                    break
                entries, touches = await repository.progress_of(
                    session, funnel_id, None, (after, persons[-1])
                )
            ok = await asyncio.to_thread(
                self._replace, funnel_id, definition, persons, entries, touches, True
            )
            if not ok:
                self._pending.pop(funnel_id, None)
                return
            after = persons[-1]
        async with self._poll_lock:
            self._held[funnel_id] = _Held(version, definition)
            changed = sorted(self._pending.pop(funnel_id, ()))
            if changed:
                await self._apply(funnel_id, changed)

    def _clear(self, funnel_id: str) -> None:
        funnel = self._funnel_key(funnel_id)
        with self._write:
            for table in ("entries", "touches"):
                self._db.execute(f"DELETE FROM {table} WHERE funnel = $f", {"f": funnel})  # noqa: S608

    async def _start_log(self) -> None:
        async with self._sessions() as session:
            self._position = await repository.log_position(session)
            self.complete_to_us = derive(
                await freshness.partition_states(session, self._group_id)
            ).complete_to_us
            self._polled_at_us = now_us()

    async def catch_up(self) -> None:
        """Apply what the log holds beyond the replica."""
        async with self._poll_lock:
            if self._position is None:
                await self._start_log()
                return
            if now_us() - self._polled_at_us > self._keep_us // 2:
                self._drop_all()  # the log may have lost rows this replica needed
                await self._start_log()
                return
            began = now_us()
            async with self._sessions() as session:
                complete = derive(
                    await freshness.partition_states(session, self._group_id)
                ).complete_to_us
                position = await repository.log_position(session)
                rows = await repository.log_since(session, self._position)
            fresh = [r for r in rows if r[0] not in self._seen]
            changed: dict[str, set[str]] = {}
            for _, _, funnel, person in fresh:
                if funnel in self._held:
                    changed.setdefault(funnel, set()).add(person)
                elif funnel in self._pending:
                    self._pending[funnel].add(person)
            for funnel, persons in sorted(changed.items()):
                await self._apply(funnel, sorted(persons))
            # Rows the next read returns again (see ``log_since``): skipped then.
            self._seen = {
                r[0] for r in rows if (r[0] > position if r[1] is None else r[1] >= position)
            }
            self._position = position
            self.complete_to_us = complete
            self._polled_at_us = began

    async def _apply(self, funnel_id: str, persons: Sequence[str]) -> None:
        held = self._held[funnel_id]
        async with self._sessions() as session:
            entries, touches = await repository.progress_of(session, funnel_id, persons)
        ok = await asyncio.to_thread(
            self._replace, funnel_id, held.definition, persons, entries, touches, False
        )
        if not ok:
            self._held.pop(funnel_id, None)

    def _funnel_key(self, funnel_id: str) -> int:
        return self._funnels.setdefault(funnel_id, len(self._funnels))

    def _key(self, person: str) -> int:
        key = self._persons.get(person)
        if key is None:
            key = self._persons[person] = len(self._persons)
        return key

    def _replace(
        self,
        funnel_id: str,
        definition: FunnelDefinition,
        persons: Sequence[str],
        entries: dict[str, list[Entry]],
        touches: dict[str, list[Touch]],
        absent: bool,
    ) -> bool:
        """Replace these persons' rows in one transaction (``absent``: they have none yet);
        False when a person's entries do not fit the layout (two starting at one instant)."""
        entry_rows: list[tuple[Any, ...]] = []
        touch_rows: list[tuple[Any, ...]] = []
        funnel = self._funnel_key(funnel_id)
        try:
            for person in persons:
                key = self._key(person)
                found = columnar.person_rows(
                    definition, key, entries.get(person, ()), touches.get(person, ())
                )
                entry_rows.extend((funnel, *r) for r in found.entries)
                touch_rows.extend((funnel, *r) for r in found.touches)
        except ValueError:
            log.warning("funnel %s: entries the columnar layout cannot hold", funnel_id)
            return False
        keys = [self._persons[p] for p in persons]
        with self._write:
            db = self._db.cursor()
            try:
                db.execute("BEGIN")
                for table in ("entries", "touches"):
                    if keys and not absent:
                        db.execute(
                            f"DELETE FROM {table} WHERE funnel = $f AND person IN "  # noqa: S608
                            "(SELECT unnest($k))",
                            {"f": funnel, "k": keys},
                        )
                _insert(db, "entries", 9, entry_rows)
                _insert(db, "touches", 7, touch_rows)
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    db.execute("ROLLBACK")
                raise
            finally:
                db.close()
        return True

    def _drop_all(self) -> None:
        self._held.clear()
        with self._write:
            for table in ("entries", "touches"):
                self._db.execute(f"DELETE FROM {table}")  # noqa: S608

    async def _purge(self) -> None:
        if time.monotonic() - self._purged_at < 60:
            return
        self._purged_at = time.monotonic()
        before = now_us() - self._keep_us
        async with self._sessions() as session:
            if not await repository.log_older_than(session, before):
                return  # no write transaction for nothing (SQLite has one writer)
        async with self._sessions.begin() as session:
            await repository.purge_log(session, before)

    # --- the background poll -------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            try:
                await self.catch_up()
                await self._purge()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("columnar replica: reading the progress log failed")
            await asyncio.sleep(self._poll_s)

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._loading.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        """Close DuckDB once no write runs (a read still running keeps its own cursor)."""
        with self._write, contextlib.suppress(duckdb.Error):
            self._db.close()


def _insert(
    db: duckdb.DuckDBPyConnection, table: str, width: int, rows: list[tuple[Any, ...]]
) -> None:
    """Insert rows as one list per column, unnested side by side (one statement)."""
    if not rows:
        return
    columns = {f"c{i}": [r[i] for r in rows] for i in range(width)}
    values = ", ".join(f"unnest($c{i})" for i in range(width))
    db.execute(f"INSERT INTO {table} SELECT {values}", columns)
