"""How far the aggregator has got: its lag per partition, and ``complete_to``, an instant such
that every event ingest acknowledged before it is counted.

The aggregator writes, per partition (table ``aggregator_progress``, see
:mod:`services.aggregator.freshness`), the partition's end offset and the instant just before
it asked for it, and an instant up to which it had applied everything. Its next offsets are in
``consumer_offsets``, committed with the state they describe. From these alone (the API has
no Kafka client) a partition is complete to the later of

* its stored instant, and
* the instant its end offset was asked for, if the stored next offset has reached that end
  offset since: every record acknowledged before that instant lies below it;

and everything is complete to the earliest of its partitions' instants. That is a lower bound
whatever happens: when the aggregator stops, it only stops advancing. A partition no
aggregator has reported yet makes it unknown (``None``). Pure: the rows are read by
:mod:`services.api.repository.freshness`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PartitionState:
    topic: str
    partition: int
    end_offset: int | None
    observed_at_us: int | None
    complete_to_us: int | None
    next_offset: int | None  # what is applied: stored with the state it describes


@dataclass(frozen=True, slots=True)
class PartitionFreshness:
    topic: str
    partition: int
    lag_records: int | None  # records behind the end offset seen at observed_at
    complete_to_us: int | None
    observed_at_us: int | None


@dataclass(frozen=True, slots=True)
class Freshness:
    complete_to_us: int | None
    partitions: tuple[PartitionFreshness, ...]

    @property
    def lag_records(self) -> int | None:
        lags = [p.lag_records for p in self.partitions]
        return None if not lags or None in lags else sum(p or 0 for p in lags)


def partition_freshness(state: PartitionState) -> PartitionFreshness:
    applied = state.next_offset or 0
    lag = None if state.end_offset is None else max(state.end_offset - applied, 0)
    known = [state.complete_to_us]
    if lag == 0:  # applied up to what was acknowledged before the end offset was asked for
        known.append(state.observed_at_us)
    found = [t for t in known if t is not None]
    return PartitionFreshness(
        state.topic,
        state.partition,
        lag,
        max(found) if found else None,
        state.observed_at_us,
    )


def derive(states: list[PartitionState]) -> Freshness:
    partitions = tuple(partition_freshness(s) for s in states)
    instants = [p.complete_to_us for p in partitions]
    complete = None if not instants or None in instants else min(t or 0 for t in instants)
    return Freshness(complete, partitions)
