"""What the aggregator writes per partition and what the API derives from it (pure parts)."""

from __future__ import annotations

from services.aggregator.freshness import observed
from services.aggregator.repository.freshness import Observed
from services.api.freshness import PartitionState, derive

P0, P1, P2 = (("funnel.events", n) for n in range(3))


def test_a_caught_up_partition_is_complete_to_the_instant_before_asking():
    rows = observed({P0: 5, P1: 0}, {P0: 5, P1: None}, {}, asked_at_us=1_000)
    assert rows == [Observed(P0, 5, 1_000, True, 1_000), Observed(P1, 0, 1_000, True, 1_000)]


def test_a_partition_behind_is_complete_to_its_newest_applied_record_never_past_now():
    rows = observed({P0: 9, P1: 9}, {P0: 4, P1: 4}, {P0: 700, P1: 5_000}, asked_at_us=1_000)
    assert [r.complete_to_us for r in rows] == [700, 1_000]  # a clock ahead: no further


def test_partitions_not_owned_or_with_nothing_applied_are_unknown():
    rows = observed({P0: 9, P1: 9}, {P0: None}, {}, asked_at_us=1_000)
    assert [(r.owned, r.complete_to_us) for r in rows] == [(True, None), (False, None)]


def test_everything_is_complete_to_the_earliest_partition_and_unknown_if_one_is():
    states = [
        PartitionState(*P0, end_offset=5, observed_at_us=900, complete_to_us=800, next_offset=5),
        PartitionState(*P1, end_offset=5, observed_at_us=900, complete_to_us=600, next_offset=3),
    ]
    found = derive(states)
    assert [p.complete_to_us for p in found.partitions] == [900, 600]
    assert (found.complete_to_us, found.lag_records) == (600, 2)
    unknown = PartitionState(
        *P2, end_offset=None, observed_at_us=None, complete_to_us=None, next_offset=None
    )
    assert derive([*states, unknown]).complete_to_us is None
    assert derive([]).complete_to_us is None
