"""Computed reports kept while they are still exact, so that repeated reads cost nothing;
and, within a bounded age, served while a newer one is computed.

A report depends on the funnel's definition, on the stored entries and touches, and on the
clock (which entries are still in progress; which entries an open-ended range covers). A kept
report is *exact* while all three are unchanged:

- its *basis* has not moved: the funnel's backfill progress and its change counters (the
  aggregator adds to them in the transaction that changes the funnel's entries or touches,
  so any committed change to what the report reads moves them); the definition's version is
  part of the key itself;
- the clock has not reached ``valid_until``: the first instant at which an entry of the range
  closes its window, enters an open-ended range or leaves a rolling one.

Under a steady stream of events the basis of an active funnel moves with every batch, and a
report over a large range takes seconds to compute. So a kept report that is no longer exact,
but took at least ``slow_us`` to compute and was computed at most ``max_stale_us`` ago, is
served *stale* (the answer says so and when it was computed) while one computation of the
current state runs in the background; a later read gets that one. Reports quicker than
``slow_us`` are always computed when inexact, so they stay exact; ``max_stale_us`` 0 serves
exact reports only.

The basis is read before the report is computed: a change committed in between makes the next
read find it inexact, never take it for exact. Identical requests that miss together share one
computation.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from services.api.reports.python import FunnelReport


@dataclass(frozen=True, slots=True)
class Computed:
    start: datetime
    end: datetime
    report: FunnelReport
    computed_at_us: int
    valid_until_us: int
    basis: Hashable = None
    took_us: int = 0
    complete_to_us: int | None = None  # every event acknowledged before it is in ``report``


Freshness = Literal["exact", "stale"]
log = logging.getLogger(__name__)


class ReportCache:
    """At most ``size`` reports, least recently used first out; ``size`` 0 keeps none."""

    def __init__(self, size: int, max_stale_us: int = 0, slow_us: int = 0) -> None:
        self._size = size
        self._max_stale_us = max_stale_us
        self._slow_us = slow_us
        self._kept: OrderedDict[Hashable, Computed] = OrderedDict()
        self._running: dict[Hashable, asyncio.Future[Computed]] = {}
        self._refreshing: set[asyncio.Task[Computed]] = set()

    def get(self, key: Hashable, basis: Hashable, now_us: int) -> tuple[Computed, Freshness] | None:
        """The kept report of ``key``, exact or still young enough to serve stale."""
        found = self._kept.get(key)
        if found is None:
            return None
        if found.basis == basis and now_us < found.valid_until_us:
            self._kept.move_to_end(key)
            return found, "exact"
        young = now_us - found.computed_at_us <= self._max_stale_us
        if young and found.took_us >= self._slow_us:
            self._kept.move_to_end(key)
            return found, "stale"
        del self._kept[key]
        return None

    def refresh(self, key: Hashable, work: Callable[[], Awaitable[Computed]]) -> None:
        """Compute ``key`` anew in the background, unless that is already under way."""
        if key in self._running:
            return
        task = asyncio.create_task(self.compute(key, work))
        self._refreshing.add(task)
        task.add_done_callback(self._refreshed)

    def _refreshed(self, task: asyncio.Task[Computed]) -> None:
        self._refreshing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The stale report ages out; a later read computes it in the foreground.
            log.warning("background report refresh failed: %r", task.exception())

    async def close(self) -> None:
        """Cancel background refreshes (at shutdown)."""
        for task in list(self._refreshing):
            task.cancel()
        await asyncio.gather(*self._refreshing, return_exceptions=True)

    async def compute(self, key: Hashable, work: Callable[[], Awaitable[Computed]]) -> Computed:
        """Run ``work`` (or join the same key's run in progress) and keep what it gives."""
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Computed] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            computed = await work()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # marked retrieved: joiners re-raise it
            raise
        finally:
            del self._running[key]
        future.set_result(computed)
        if self._size > 0:
            self._kept[key] = computed
            self._kept.move_to_end(key)
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)
        return computed
