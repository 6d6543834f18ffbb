"""The API process's columnar replica of stored progress: DuckDB, in memory, in-process.

Per funnel version it holds the tables of :mod:`services.api.reports.columnar` (typed
columns, integer persons, dictionary-coded touch values), copied from the funnel's stored
entries and touches with the bounds the aggregator stores with them (migration 0013): no
per-person work here, the database reads the JSON and the rows go in as columns, one insert
per table and slice. SQLite or PostgreSQL stay the record. It follows the database through
the progress log (migration 0012): the aggregator appends the (funnel, person) pairs each
batch changed in the batch's transaction; the replica reads the log's new rows (every
``poll_s``, and before each report it computes), re-reads those persons' rows and replaces
theirs in one DuckDB transaction. A funnel is loaded whole the first time a report asks for
it and again after a redefinition (a new version, into new tables that replace the old once
complete); a report for it falls back to the database meanwhile.

``complete_to_us``: the freshness instant read just before the replica's latest log read,
so every event acknowledged before it is in the replica (the instant is advanced in the
transactions that wrote those events' progress, which the log read sees).

The log is purged of rows older than ``log_keep_s``; a replica whose latest successful read
is older than half that drops what it holds and loads funnels again on demand.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from services.api.freshness import derive
from services.api.replica_store import Staged, Store
from services.api.reports import columnar, sql
from services.api.reports.forecast import PipelineTally
from services.api.reports.python import Breakdown, FunnelReport, Window
from services.api.repository import Sessions, freshness
from services.api.repository import replica as repository
from shared.clock import US, now_us
from shared.db import is_postgres
from shared.funnel import CountMode, FunnelDefinition

log = logging.getLogger(__name__)

LOAD_SLICE = 50_000  # persons read per transaction when a funnel is loaded whole
CLOSE_WAIT_S = 30.0  # at shutdown, how long cancelled loads may take to end


@dataclass(frozen=True, slots=True)
class _Held:
    """A funnel version and its tables."""

    version: int
    definition: FunnelDefinition
    tables: columnar.Tables


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
        self._store = Store()
        self._persons: dict[str, int] = {}  # as the store's persons table holds them
        self._coding = asyncio.Lock()  # keys are given (here or by the store) one at a time
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
        found = await self._query(
            funnel_id,
            version,
            lambda tables: columnar.report_statement(tables, definition, window, count, breakdown),
        )
        if found is None:
            return None
        rows, complete = found
        return sql.report_from_rows(definition, rows, breakdown), complete

    async def cohort_reports(
        self,
        funnel_id: str,
        version: int,
        definition: FunnelDefinition,
        windows: Sequence[Window],
        count: CountMode,
    ) -> tuple[list[FunnelReport], int | None] | None:
        """One report per window (trends' cohorts: disjoint, ascending, one "now"; no
        breakdown; at least one), from one statement after one catch-up, and the instant they
        are complete to; ``None`` when the replica does not hold this funnel version."""
        found = await self._query(
            funnel_id,
            version,
            lambda tables: columnar.cohorts_statement(tables, definition, windows, count),
        )
        if found is None:
            return None
        rows, complete = found
        by_window: dict[int, list[Any]] = {r[0]: [r[1:]] for r in rows}
        reports = [
            sql.report_from_rows(definition, by_window.get(k, []), None)
            for k in range(len(windows))
        ]
        return reports, complete

    async def pipeline(
        self,
        funnel_id: str,
        version: int,
        definition: FunnelDefinition,
        window: Window,
        count: CountMode,
    ) -> tuple[PipelineTally, int | None] | None:
        """The forecast's tally (``sql.pipeline_statement``'s) from the replica, and the
        instant it is complete to; ``None`` when it does not hold this funnel version."""
        found = await self._query(
            funnel_id,
            version,
            lambda tables: columnar.pipeline_statement(tables, definition, window, count),
        )
        if found is None:
            return None
        rows, complete = found
        return sql.pipeline_from_rows(definition, rows), complete

    async def _query(
        self,
        funnel_id: str,
        version: int,
        statement: Callable[[columnar.Tables], tuple[str, dict[str, Any]]],
    ) -> tuple[list[Any], int | None] | None:
        """The rows of the statement over the funnel version's tables, read after a
        catch-up, and the instant they are complete to (counted in ``served``); ``None``
        when the replica does not hold this version (or replaced its tables while reading)."""
        await self.catch_up()
        held = self._held.get(funnel_id)
        if held is None or held.version != version:
            return None
        complete = self.complete_to_us
        try:
            rows = await asyncio.to_thread(self._store.read, *statement(held.tables))
        except duckdb.CatalogException:
            return None  # its tables were replaced meanwhile (a redefinition)
        if self._held.get(funnel_id) is not held:
            return None
        self.served += 1
        return rows, complete

    def memory_bytes(self) -> int:
        return self._store.memory_bytes()

    # --- following the database ----------------------------------------------------------

    async def load(self, funnel_id: str, version: int, definition: FunnelDefinition) -> None:
        """Load the funnel whole into new tables, a slice of persons at a time, each read in
        a short transaction of its own (on SQLite each holds the write lock); they replace
        the held ones when complete. The log's position is taken first, so a person changed
        after their slice was read is applied again once the load is done."""
        async with self._poll_lock:
            if self._position is None:
                await self._start_log()
            self._pending[funnel_id] = set()  # persons the log names meanwhile
        tables = await asyncio.to_thread(self._store.create, definition)
        held = _Held(version, definition, tables)
        after: str | None = None
        try:
            with tempfile.TemporaryDirectory(prefix="replica-") as folder:
                while True:
                    after = await self._load_next(held, funnel_id, after, Path(folder))
                    if after is None:
                        break
        except BaseException:
            self._pending.pop(funnel_id, None)
            await asyncio.to_thread(self._store.drop, tables)
            raise
        async with self._poll_lock:
            was = self._held.get(funnel_id)
            self._held[funnel_id] = held
            changed = sorted(self._pending.pop(funnel_id, ()))
            if changed:
                await self.apply(funnel_id, changed)
        if was is not None:
            await asyncio.to_thread(self._store.drop, was.tables)

    async def _load_next(
        self, held: _Held, funnel_id: str, after: str | None, folder: Path
    ) -> str | None:
        """Load the next slice of persons; the last of them (None: none left)."""
        d = held.definition
        async with self._sessions() as session:
            persons = await repository.persons_after(session, funnel_id, after, self._load_slice)
            if not persons:
                return None
            scope = (after, persons[-1])
            entries: Staged
            touches: Staged
            if is_postgres(session):
                entries, touches = folder / "entries.csv", folder / "touches.csv"
                await repository.copy_progress(session, funnel_id, d, scope, entries, touches)
            else:
                entries = await repository.entry_columns(session, funnel_id, d, scope)
                touches = await repository.touch_columns(session, funnel_id, d, scope)
        async with self._coding:
            coded = await asyncio.to_thread(
                self._store.load, held.tables, held.definition, entries, touches
            )
            self._persons.update(coded)
        return persons[-1]

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
                await self._drop_all()  # the log may have lost rows this replica needed
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
                if funnel in self._pending:
                    self._pending[funnel].add(person)
            for funnel, persons in sorted(changed.items()):
                await self.apply(funnel, sorted(persons))
            # Rows the next read returns again (see ``log_since``): skipped then.
            self._seen = {
                r[0] for r in rows if (r[0] > position if r[1] is None else r[1] >= position)
            }
            self._position = position
            self.complete_to_us = complete
            self._polled_at_us = began

    async def apply(self, funnel_id: str, persons: Sequence[str]) -> None:
        """Re-read these persons' rows of a held funnel and replace theirs (what a catch-up
        does for the persons the log names)."""
        held = self._held[funnel_id]
        async with self._sessions() as session:
            d = held.definition
            entries = await repository.entry_columns(session, funnel_id, d, persons)
            touches = await repository.touch_columns(session, funnel_id, d, persons)
        new: list[tuple[str, int]] = []
        keys = [self._key(p, new) for p in persons]
        entries[0] = [self._key(p, new) for p in entries[0]]
        touches[0] = [self._key(p, new) for p in touches[0]]
        await asyncio.to_thread(self._store.apply, held.tables, d, keys, new, entries, touches)

    def _key(self, person: str, new: list[tuple[str, int]]) -> int:
        """The person's key, a new one (added to ``new``) for a person not held yet."""
        key = self._persons.get(person)
        if key is None:
            key = self._persons[person] = len(self._persons)
            new.append((person, key))
        return key

    async def _drop_all(self) -> None:
        held, self._held = self._held, {}
        for h in held.values():
            await asyncio.to_thread(self._store.drop, h.tables)

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
        if tasks:  # a load finishes its slice's COPY first (see repository.copy_rows)
            done, _ = await asyncio.wait(tasks, timeout=CLOSE_WAIT_S)
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: a load that failed needs no report now
        await asyncio.to_thread(self._store.close)
