"""The Kafka adapter of the aggregator: a consumer whose positions come from the database.

Partitions are assigned paused and *pending*: the rebalance listener, which runs on
kafka-python's IO thread with the heartbeats, only records them and never touches the
database. The consume loop loads their next offsets from the database (stored in the same
transaction as the state they describe; retried while the database is away), seeks there,
or to the beginning when none is stored, and resumes them (:meth:`Source.start`). After a
failed or stale batch every partition is rewound the same way (its records were fetched
already). While partitions wait, ``poll`` keeps the group membership. Kafka's committed
offsets are written afterwards for monitoring only.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from services.aggregator.model import Partition

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


class Source(Protocol):
    """Blocking calls, made from one thread at a time (the listener may run on another)."""

    def poll(self) -> list[SourceRecord]:
        """Records of started partitions only."""
        ...

    def pending(self) -> dict[Partition, int]:
        """Assigned partitions waiting to be started, each with its assignment's serial."""
        ...

    def start(self, stored: dict[Partition, int], pending: dict[Partition, int]) -> None:
        """Seek ``pending`` partitions (as :meth:`pending` gave them, if still so) to their
        ``stored`` next offsets, or to the beginning, and resume them."""
        ...

    def expected(self) -> dict[Partition, int | None]:
        """The stored next offset of each started partition (``None``: nothing stored yet)."""
        ...

    def committed(self, offsets: dict[Partition, int]) -> None: ...

    def rewind(self) -> None:
        """Pause every partition and make it pending again."""
        ...

    def lag(self) -> dict[Partition, int]: ...

    def end_offsets(self, timeout_ms: int) -> dict[Partition, int]:
        """Every partition of the subscribed topics and its end offset, asked of the broker
        now (not the one last fetched); raises KafkaError when it does not answer in time."""
        ...

    def close(self) -> None: ...


class KafkaSource:
    def __init__(
        self,
        bootstrap_servers: str,
        group_id: str,
        topics: Iterable[str],
        *,
        max_poll_records: int,
        poll_timeout_ms: int,
        session_timeout_ms: int,
        heartbeat_interval_ms: int,
    ) -> None:
        self._poll_timeout_ms = poll_timeout_ms
        self._lock = threading.Lock()
        self._serial = 0
        self._pending: dict[Partition, int] = {}
        self._expected: dict[Partition, int | None] = {}
        self._consumer: Any = KafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_poll_records,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            max_poll_interval_ms=max(300_000, session_timeout_ms),
        )
        self._consumer.subscribe(list(topics), listener=_Listener(self))

    def topic_partitions(self, topic: str) -> list[int]:
        """The topic's partitions as the consumer's metadata knows them (empty: unknown)."""
        return sorted(self._consumer.partitions_for_topic(topic) or ())

    def _assigned(self, partitions: list[Any]) -> None:
        self._hold(partitions)
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in partitions))

    def _hold(self, partitions: list[Any]) -> None:
        for tp in partitions:
            with contextlib.suppress(KeyError):  # revoked meanwhile
                self._consumer.pause(tp)
        with self._lock:
            for tp in partitions:
                self._serial += 1
                key = (tp.topic, tp.partition)
                self._pending[key] = self._serial
                self._expected.pop(key, None)

    def _revoked(self, partitions: list[Any]) -> None:
        with self._lock:
            for tp in partitions:
                self._expected.pop((tp.topic, tp.partition), None)
                self._pending.pop((tp.topic, tp.partition), None)
        log.info("revoked %s", sorted((tp.topic, tp.partition) for tp in partitions))

    def poll(self) -> list[SourceRecord]:
        batches = self._consumer.poll(timeout_ms=self._poll_timeout_ms)
        with self._lock:
            started = set(self._expected)
        return [
            SourceRecord(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
            for tp, messages in batches.items()
            if (tp.topic, tp.partition) in started
            for m in messages
        ]

    def pending(self) -> dict[Partition, int]:
        with self._lock:
            return dict(self._pending)

    def start(self, stored: dict[Partition, int], pending: dict[Partition, int]) -> None:
        with self._lock:
            ready = [p for p, serial in pending.items() if self._pending.get(p) == serial]
        sought = []
        for key in ready:  # outside the lock: the listener takes it on the IO thread
            tp = TopicPartition(*key)
            try:
                if key in stored:
                    self._consumer.seek(tp, stored[key])
                else:
                    self._consumer.seek_to_beginning(tp)
                self._consumer.resume(tp)
            except (KafkaError, ValueError, KeyError) as exc:  # revoked meanwhile: forgotten
                log.info("could not start %s: %s", key, exc)
                continue
            sought.append(key)
        with self._lock:
            for key in sought:
                if self._pending.get(key) == pending[key]:  # else assigned again: held
                    del self._pending[key]
                    self._expected[key] = stored.get(key)
        log.info("started %s at stored offsets %s", sorted(sought), stored)

    def expected(self) -> dict[Partition, int | None]:
        with self._lock:
            return dict(self._expected)

    def committed(self, offsets: dict[Partition, int]) -> None:
        with self._lock:
            for key, offset in offsets.items():
                if key in self._expected:
                    self._expected[key] = offset
        informative = {
            TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()
        }
        try:
            self._consumer.commit_async(informative)
        except KafkaError as exc:  # informative only: the database holds the real offsets
            log.debug("kafka offset commit failed: %s", exc)

    def rewind(self) -> None:
        self._hold(list(self._consumer.assignment()))

    def lag(self) -> dict[Partition, int]:
        lags = {}
        for key in self.expected():
            tp = TopicPartition(*key)
            try:
                high = self._consumer.highwater(tp)
                position = self._consumer.position(tp, timeout_ms=1000)
            except KafkaError as exc:  # revoked meanwhile, or the broker is away
                log.debug("no lag for %s: %s", key, exc)
                continue
            if high is not None and position is not None:
                lags[key] = max(high - position, 0)
        return lags

    def end_offsets(self, timeout_ms: int) -> dict[Partition, int]:
        partitions = [
            TopicPartition(topic, p)
            for topic in sorted(self._consumer.subscription() or ())
            for p in sorted(self._consumer.partitions_for_topic(topic) or ())
        ]
        ends = self._consumer.end_offsets(partitions, timeout_ms) if partitions else {}
        return {(tp.topic, tp.partition): int(end) for tp, end in ends.items()}

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    def on_partitions_revoked(self, revoked: list[Any]) -> None:
        self._source._revoked(revoked)

    def on_partitions_assigned(self, assigned: list[Any]) -> None:
        self._source._assigned(assigned)
