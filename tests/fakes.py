"""Fakes for the aggregator's consume loop: a Kafka source and a processor, in memory.

``FakeSource`` keeps the :class:`services.aggregator.source.Source` contract of the Kafka
adapter: partitions are assigned pending and paused, started at the offsets the loop read
from the database, and rewound (pending again) after a failure. ``FakeProcessor`` applies
batches as the real one does as far as the loop can tell: all or nothing, offsets moved by
compare-and-set (``StaleOffsets`` when another consumer moved them), and it can be told to
fail as an unavailable database does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from services.aggregator.model import Partition
from services.aggregator.repository.offsets import StaleOffsets
from services.aggregator.source import SourceRecord
from shared.events import EVENTS_TOPIC


class FakeSource:
    def __init__(self, max_poll_records: int = 4) -> None:
        self.max_poll_records = max_poll_records
        self.logs: dict[Partition, list[SourceRecord]] = {}
        self.commits: list[dict[Partition, int]] = []
        self.rewinds = 0
        self._lock = threading.Lock()
        self._serial = 0
        self._pending: dict[Partition, int] = {}
        self._expected: dict[Partition, int | None] = {}
        self._position: dict[Partition, int] = {}

    def append(self, partition: int, count: int) -> None:
        """Add ``count`` records to the partition's log."""
        with self._lock:
            log = self.logs.setdefault((EVENTS_TOPIC, partition), [])
            for _ in range(count):
                offset = len(log)
                log.append(SourceRecord(EVENTS_TOPIC, partition, offset, None, b"{}", 0))

    def assign(self, *partitions: int) -> None:
        """The group gave us these partitions: pending until the loop starts them."""
        with self._lock:
            self._hold([(EVENTS_TOPIC, p) for p in partitions])

    def _hold(self, partitions: list[Partition]) -> None:
        for key in partitions:
            self._serial += 1
            self._pending[key] = self._serial
            self._expected.pop(key, None)
            self._position.pop(key, None)

    def poll(self) -> list[SourceRecord]:
        with self._lock:
            found: list[SourceRecord] = []
            for key, position in sorted(self._position.items()):
                room = self.max_poll_records - len(found)
                taken = self.logs.get(key, [])[position : position + room]
                self._position[key] = position + len(taken)
                found.extend(taken)
        if not found:
            time.sleep(0.001)  # as a real poll waits for records
        return found

    def pending(self) -> dict[Partition, int]:
        with self._lock:
            return dict(self._pending)

    def start(self, stored: dict[Partition, int], pending: dict[Partition, int]) -> None:
        with self._lock:
            for key, serial in pending.items():
                if self._pending.get(key) == serial:
                    del self._pending[key]
                    self._expected[key] = stored.get(key)
                    self._position[key] = stored.get(key, 0)

    def expected(self) -> dict[Partition, int | None]:
        with self._lock:
            return dict(self._expected)

    def committed(self, offsets: dict[Partition, int]) -> None:
        with self._lock:
            for key, offset in offsets.items():
                if key in self._expected:
                    self._expected[key] = offset
            self.commits.append(dict(offsets))

    def rewind(self) -> None:
        with self._lock:
            self.rewinds += 1
            self._hold(sorted({*self._pending, *self._expected}))

    def lag(self) -> dict[Partition, int]:
        with self._lock:
            return {k: len(self.logs.get(k, [])) - p for k, p in self._position.items()}

    def close(self) -> None:
        pass


class FakeProcessor:
    def __init__(self) -> None:
        self.offsets: dict[Partition, int] = {}  # what "the database" stores
        self.applied: list[SourceRecord] = []
        self.apply_failures: list[BaseException] = []  # raised by the next applies, in turn
        self.load_failures: list[BaseException] = []  # raised by the next offset loads
        self.moved_after_load: dict[Partition, int] = {}  # another consumer's commit
        self.loads = 0

    async def load_offsets(self, partitions: list[Partition]) -> dict[Partition, int]:
        self.loads += 1
        if self.load_failures:
            raise self.load_failures.pop(0)
        found = {p: self.offsets[p] for p in partitions if p in self.offsets}
        self.offsets.update(self.moved_after_load)
        self.moved_after_load = {}
        return found

    async def apply(
        self, records: Sequence[SourceRecord], expected: dict[Partition, int | None]
    ) -> dict[Partition, int]:
        if self.apply_failures:
            raise self.apply_failures.pop(0)
        moves = {(r.topic, r.partition): r.offset + 1 for r in records}
        for key in sorted(moves):
            if self.offsets.get(key) != expected.get(key):
                raise StaleOffsets(f"{key} moved past {expected.get(key)}")
        self.offsets.update(moves)
        self.applied.extend(records)
        return moves

    async def backfill_step(self, limit: int) -> bool:
        return False

    async def purge_expired(self) -> int:
        return 0

    async def refresh_statistics(self) -> None:
        return None

    async def apply_signals(self, expected: dict[Partition, int | None]) -> None:
        return None

    def offsets_applied(self, partition: int) -> list[int]:
        return [r.offset for r in self.applied if r.partition == partition]
