"""What the aggregator has applied, per partition, written for the API's freshness figures.

Every ``every_s`` (and never more than that) the consume loop calls :meth:`Progress.observe`;
it asks the broker for every partition's end offset, noting the instant just *before* asking,
and writes per partition (table ``aggregator_progress``, outside the batches' transactions)
that end offset and instant, and ``complete_to_us``: an instant such that every record the
broker acknowledged before it has been applied. For a partition this process owns, that is

* the instant before asking, when the stored next offset had already reached the end offset
  (every record acknowledged before it lies below the end offset), else
* the newest Kafka timestamp among the records this process has applied there: a record's
  timestamp is set by its producer when it is sent, before the broker appends it; a record
  after it in the log was appended later, so acknowledged later; so every record
  acknowledged before that timestamp lies at or before the applied one.

The stored instant never decreases (another owner may have written a later one). Rows of
partitions no process has owned yet are written empty, so that the API cannot take the
partitions it knows of for all of them; rows of partitions the topic no longer has are
deleted. A failed write is logged and tried again next time: it only delays the figures.
(Both bounds assume that producers stamp records with the time of sending, as ingest does,
or the broker with the time of appending, and clocks that agree.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from services.aggregator.model import Partition
from services.aggregator.repository import Sessions
from services.aggregator.repository.freshness import Observed, store
from services.aggregator.source import Source, SourceRecord
from shared.clock import now_us

log = logging.getLogger(__name__)
ASK_TIMEOUT_MS = 2_000  # the broker's answer to "end offsets?"; the loop waits for it
AFTER_FAILURE_S = 5.0


def observed(
    ends: dict[Partition, int],
    applied: dict[Partition, int | None],
    newest_us: dict[Partition, int],
    asked_at_us: int,
) -> list[Observed]:
    """What to write for each partition; ``applied`` holds the owned ones' next offsets."""
    found = []
    for partition, end in sorted(ends.items()):
        complete = None
        if partition in applied:
            if (applied[partition] or 0) >= end:
                complete = asked_at_us
            elif partition in newest_us:
                complete = min(newest_us[partition], asked_at_us)  # a clock ahead: no further
        found.append(Observed(partition, end, asked_at_us, partition in applied, complete))
    return found


class Progress:
    def __init__(
        self,
        sessions: Sessions,
        group_id: str,
        every_s: float = 1.0,
        clock: Callable[[], int] = now_us,
    ) -> None:
        self._sessions = sessions
        self._group_id = group_id
        self._every_s = every_s
        self._clock = clock
        self._newest_us: dict[Partition, int] = {}
        self._due = 0.0

    def applied(self, records: Sequence[SourceRecord]) -> None:
        """Note the timestamps of records just applied (committed)."""
        for r in records:
            key = (r.topic, r.partition)
            if r.timestamp_ms > 0 and r.timestamp_ms * 1000 > self._newest_us.get(key, 0):
                self._newest_us[key] = r.timestamp_ms * 1000

    async def observe(self, source: Source, records: Sequence[SourceRecord]) -> None:
        """After a round of the consume loop: ``records`` were applied (may be empty)."""
        self.applied(records)
        if time.monotonic() < self._due:
            return
        self._due = time.monotonic() + self._every_s
        try:
            await self.write(source)
        except Exception as exc:  # the figures stay behind; processing goes on
            log.warning("could not record the aggregator's progress: %r", exc)
            # The ask waits up to ASK_TIMEOUT_MS on the loop: not every second while it fails.
            self._due = time.monotonic() + AFTER_FAILURE_S

    async def write(self, source: Source) -> None:
        asked_at = self._clock()
        ends = await asyncio.to_thread(source.end_offsets, ASK_TIMEOUT_MS)
        if not ends:
            return
        rows = observed(ends, source.expected(), self._newest_us, asked_at)
        async with self._sessions.begin() as session:
            await store(session, self._group_id, rows, self._clock())
