"""Serving a funnel's reports: kept while exact (or young enough to serve stale while one
recomputation runs), else computed now, each with the instant its data is complete to.

One engine per API process; the report, chart, plan, diagnosis and shared chart routes share
its kept reports. A request's own computation runs in the request's session; a background
recomputation (of a stale report) opens a session of its own.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from services.api.freshness import derive
from services.api.limits import bounded_range
from services.api.replica import Replica
from services.api.reports.cache import Computed, ReportCache
from services.api.reports.computation import compute_report, replica_for, valid_until
from services.api.reports.python import Breakdown, FunnelReport, Window
from services.api.reports.raw import needs_events
from services.api.repository import Session, Sessions, freshness, progress
from services.api.repository.funnels import FunnelRow
from services.api.settings import ApiSettings
from shared.clock import DAY_US, US, Clock
from shared.events import from_micros, to_micros
from shared.funnel import Condition, CountMode, FunnelDefinition

How = Literal["computed", "exact", "stale"]  # how a report answer was made
PERSONS_TTL_S = 30.0


@dataclass(frozen=True, slots=True)
class Served:
    computed: Computed
    how: How
    # Every event acknowledged before this instant is counted in ``computed`` (None: unknown).
    complete_to_us: int | None


@dataclass(frozen=True, slots=True)
class _Work:
    """One computation of a report: what it covers, and the basis its answer is kept under."""

    funnel: tuple[str, str]  # project id, funnel id
    definition: FunnelDefinition
    mode: CountMode
    chosen: Breakdown | None
    filters: tuple[Condition, ...]
    range: tuple[datetime, datetime, Window]  # [start, end) and the window of its entries
    basis: Hashable
    open_end: bool
    rolling_us: int | None
    group_id: str
    version: int = 0
    replica: Replica | None = None  # the columnar replica, when reports may use it

    async def run(self, session: Session) -> Computed:
        start, end, window = self.range
        began = time.perf_counter()
        # The replica reads in sessions of its own, before this one holds a transaction (on
        # SQLite each holds the write lock), and says what it is complete to.
        found = await self._from_replica(window)
        if found is not None:
            result, complete = found
        else:
            # Read before what it describes (identical requests share one computation, so
            # each computation carries its own instant).
            complete = await group_complete_to(session, self.group_id)
            result = await compute_report(
                session, self.funnel, self.definition, window, self.mode, self.chosen, self.filters
            )
        if needs_events(self.definition, self.chosen, self.filters):
            # Made from raw events, which the basis does not follow: exact only now.
            until = window.now
        else:
            until = await valid_until(
                session,
                self.funnel[1],
                self.definition,
                window,
                open_end=self.open_end,
                rolling=self.rolling_us,
            )
        took = int((time.perf_counter() - began) * US)
        return Computed(start, end, result, window.now, until, self.basis, took, complete)

    async def _from_replica(self, window: Window) -> tuple[FunnelReport, int | None] | None:
        """The report from the columnar replica when it covers it and holds the funnel's
        version, caught up with the log (else the replica starts loading the funnel)."""
        if self.filters:
            return None
        funnel_id = self.funnel[1]
        replica = replica_for(
            self.replica,
            (funnel_id, self.version, self.basis_done),
            self.definition,
            self.mode,
            self.chosen,
        )
        if replica is None:
            return None
        return await replica.report(
            funnel_id, self.version, self.definition, window, self.mode, self.chosen
        )

    @property
    def basis_done(self) -> bool:
        """Whether the funnel's backfill is done (the basis's first part)."""
        return bool(self.basis[0]) if isinstance(self.basis, tuple) else False


async def group_complete_to(session: Session, group_id: str) -> int | None:
    """The instant every event acknowledged before is counted (see :mod:`..freshness`)."""
    return derive(await freshness.partition_states(session, group_id)).complete_to_us


class ReportEngine:
    """The API process's reports: kept, computed, and the persons of running backfills."""

    def __init__(self, settings: ApiSettings, sessions: Sessions, clock: Clock) -> None:
        self._settings = settings
        self._sessions = sessions  # for background recomputations, which outlive a request
        self._clock = clock
        self._cache = ReportCache(
            settings.report_cache_size,
            max_stale_us=int(settings.report_max_stale_s * US),
            slow_us=int(settings.report_stale_after_ms * 1_000),  # ms to µs
        )
        # Persons per project (a backfill's total) and when they were counted (monotonic s).
        self._persons: dict[str, tuple[int, float]] = {}
        self.replica: Replica | None = None
        if settings.read_engine == "duckdb":
            self.replica = Replica(sessions, settings.aggregator_group_id)
            self.replica.start()

    def range(
        self, from_: str | None, to: str | None, default_days: int | None = None
    ) -> tuple[datetime, datetime, Window]:
        """A request's range [from, to) and the window of entries it selects, made now."""
        now = self._clock.now_us()
        start, end = bounded_range(
            from_,
            to,
            now=from_micros(now),
            default_days=default_days or self._settings.default_range_days,
            max_days=self._settings.max_range_days,
        )
        return start, end, Window(to_micros(start), to_micros(end), now)

    async def complete_to_us(self, session: Session) -> int | None:
        return await group_complete_to(session, self._settings.aggregator_group_id)

    async def serve(
        self,
        session: Session,
        row: FunnelRow,
        definition: FunnelDefinition,
        from_: str | None,
        to: str | None,
        mode: CountMode,
        chosen: Breakdown | None,
        *,
        fresh: bool = False,
        last_days: int | None = None,
        filters: tuple[Condition, ...] = (),
    ) -> Served:
        """The funnel's report over this range: kept while exact or young enough to serve
        stale, else computed now (``fresh``: always). ``last_days``: how far back a range
        without ``from`` reaches (default: the setting). ``filters``: conditions every event
        must meet (then the report is evaluated from raw events). The freshness instant is
        read before the change stamp, so that a kept exact report holds all acknowledged
        before it."""
        days = last_days or self._settings.default_range_days
        start, end, window = self.range(from_, to, days)
        now_complete = await self.complete_to_us(session)
        stamp = await progress.change_stamp(session, row.id)
        key = (row.id, row.version, from_, to, mode, chosen, days, repr(filters))
        work = _Work(
            (row.project_id, row.id),
            definition,
            mode,
            chosen,
            filters,
            (start, end, window),
            basis=(row.backfill_done, row.backfill_persons, stamp),
            open_end=to is None,
            rolling_us=days * DAY_US if from_ is None else None,
            group_id=self._settings.aggregator_group_id,
            version=row.version,
            replica=self.replica,
        )
        return await self._answer(session, key, work, now_complete, fresh=fresh)

    async def _answer(
        self, session: Session, key: Hashable, work: _Work, now_complete: int | None, *, fresh: bool
    ) -> Served:
        kept = None if fresh else self._cache.get(key, work.basis, work.range[2].now)
        if kept is None:
            # This may wait for the same computation started by another request or in the
            # background: hold no transaction meanwhile (on SQLite each holds the write lock,
            # which that computation needs). The session is the request's, and only read.
            await session.commit()
            computed = await self._cache.compute(key, lambda: work.run(session))
            return Served(computed, "computed", computed.complete_to_us)
        if kept[1] == "stale":
            self._cache.refresh(key, lambda: self._in_own_session(work))
            return Served(kept[0], "stale", kept[0].complete_to_us)
        return Served(kept[0], "exact", now_complete)

    async def _in_own_session(self, work: _Work) -> Computed:
        async with self._sessions() as session:
            return await work.run(session)

    async def project_persons(self, session: Session, project_id: str) -> int:
        """How many persons the project has, the total a running backfill walks: counted at
        most every ``PERSONS_TTL_S`` per API process (the count reads every stored event of
        the project, too much to pay on every report read)."""
        kept = self._persons.get(project_id)
        if kept is not None and time.monotonic() - kept[1] < PERSONS_TTL_S:
            return kept[0]
        persons = await progress.project_persons(session, project_id)
        self._persons[project_id] = (persons, time.monotonic())
        return persons

    async def close(self) -> None:
        """Cancel background recomputations and the replica's work (at shutdown)."""
        await self._cache.close()
        if self.replica is not None:
            await self.replica.close()
