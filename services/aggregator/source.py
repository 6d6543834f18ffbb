"""The Kafka adapter of the aggregator: a consumer whose positions come from the database.

On every partition assignment the consumer seeks to the next offset stored in the database
(in the same transaction as the state it describes), or to the beginning of the partition
when none is stored. Kafka's committed offsets are written afterwards for monitoring only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

log = logging.getLogger(__name__)

Partition = tuple[str, int]
OffsetLoader = Callable[[list[Partition]], dict[Partition, int]]


@dataclass(frozen=True, slots=True)
class SourceRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


class Source(Protocol):
    """Blocking calls, made from one thread at a time."""

    def poll(self) -> list[SourceRecord]: ...

    def expected(self) -> dict[Partition, int | None]:
        """The stored next offset of each owned partition (``None``: nothing stored yet)."""
        ...

    def committed(self, offsets: dict[Partition, int]) -> None: ...

    def reseek(self) -> None: ...

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
        load_offsets: OffsetLoader,
        *,
        max_poll_records: int,
        poll_timeout_ms: int,
        session_timeout_ms: int,
        heartbeat_interval_ms: int,
    ) -> None:
        self._load = load_offsets
        self._poll_timeout_ms = poll_timeout_ms
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

    def _assigned(self, partitions: list[Any]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        stored = self._load(keys)
        for tp, key in zip(partitions, keys, strict=True):
            self._expected[key] = stored.get(key)
            if key in stored:
                self._consumer.seek(tp, stored[key])
            else:
                self._consumer.seek_to_beginning(tp)
        log.info("assigned %s, stored offsets %s", sorted(keys), stored)

    def _revoked(self, partitions: list[Any]) -> None:
        for tp in partitions:
            self._expected.pop((tp.topic, tp.partition), None)
        log.info("revoked %s", sorted((tp.topic, tp.partition) for tp in partitions))

    def poll(self) -> list[SourceRecord]:
        batches = self._consumer.poll(timeout_ms=self._poll_timeout_ms)
        return [
            SourceRecord(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
            for tp, messages in batches.items()
            if (tp.topic, tp.partition) in self._expected
            for m in messages
        ]

    def expected(self) -> dict[Partition, int | None]:
        return dict(self._expected)

    def committed(self, offsets: dict[Partition, int]) -> None:
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

    def reseek(self) -> None:
        self._assigned(list(self._consumer.assignment()))

    def lag(self) -> dict[Partition, int]:
        lags = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is not None:
                lags[(tp.topic, tp.partition)] = max(high - self._consumer.position(tp), 0)
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
