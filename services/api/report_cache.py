"""Computed reports kept while they are still exact, so that repeated reads cost nothing.

A report depends on the funnel's definition, on the stored entries and touches, and on the
clock (which entries are still in progress; which entries an open-ended range covers). So a
cached report is served only while all three are unchanged:

- the *stamp* has not moved: the funnel's version and backfill progress, and the aggregator's
  committed consumer offsets (every batch commits its offsets in the transaction that writes
  its entries, so any committed change to the stored state moves them);
- the clock has not reached ``valid_until``: the first instant at which an entry of the range
  closes its window, enters an open-ended range or leaves a rolling one.

The stamp is read before the report is computed: a change committed in between makes the next
read miss, never serve a stale report. Identical requests that miss together share one
computation.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime

from services.api.report import FunnelReport


@dataclass(frozen=True, slots=True)
class Computed:
    start: datetime
    end: datetime
    report: FunnelReport
    computed_at_us: int
    valid_until_us: int


class ReportCache:
    """At most ``size`` reports, least recently used first out; ``size`` 0 keeps none."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._kept: OrderedDict[Hashable, Computed] = OrderedDict()
        self._running: dict[Hashable, asyncio.Future[Computed]] = {}

    def get(self, key: Hashable, now_us: int) -> Computed | None:
        found = self._kept.get(key)
        if found is None:
            return None
        if now_us >= found.valid_until_us:
            del self._kept[key]
            return None
        self._kept.move_to_end(key)
        return found

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
