"""Identity resolution (services/aggregator/identity.py) on the examples of the rules."""

from __future__ import annotations

import itertools

from services.aggregator.identity import Claim, claims_of, redundant, resolve

X_U = Claim(1, "e1", "X", "U")
X_W = Claim(2, "e2", "X", "W")


def test_a_claim_links_the_anonymous_id_to_the_user():
    found = resolve([X_U])
    assert found.root("X") == "U"
    assert found.root("U") == "U"
    assert found.refusals == []


def test_duplicates_and_arrival_order_change_nothing():
    claims = [X_U, Claim(3, "e3", "Y", "U"), Claim(4, "e4", "U", "V")]
    results = {
        (tuple(sorted(r.roots().items())), tuple(r.refusals))
        for order in itertools.permutations([*claims, X_U])
        for r in [resolve(order)]
    }
    assert len(results) == 1
    assert dict(results.pop()[0]) == {"X": "V", "Y": "V", "U": "V"}


def test_a_second_user_is_refused_whichever_comes_first():
    for order in ([X_U, X_W], [X_W, X_U]):
        found = resolve(order)
        assert found.root("X") == "U"
        assert found.root("W") == "W"
        assert [(r.claim, r.reason, r.kind) for r in found.refusals] == [
            (X_W, "already linked to U", "already_linked")
        ]


def test_a_chain_of_links_is_one_person():
    found = resolve([Claim(1, "e1", "X", "U1"), Claim(2, "e2", "U1", "U2")])
    assert found.roots() == {"X": "U2", "U1": "U2"}


def test_two_users_with_links_of_their_own_are_never_merged():
    found = resolve(
        [Claim(1, "e1", "X", "U1"), Claim(2, "e2", "Y", "U2"), Claim(3, "e3", "U1", "U2")]
    )
    assert found.roots() == {"X": "U1", "Y": "U2"}
    assert [r.reason for r in found.refusals] == ["both already have links"]


def test_an_id_linked_to_its_own_person_again_is_no_refusal():
    found = resolve([Claim(1, "e1", "X", "U"), Claim(2, "e2", "Y", "U"), Claim(3, "e3", "X", "U")])
    assert found.refusals == []


def test_a_refusal_is_recorded_once_per_pair_of_ids():
    found = resolve([X_U, X_W, Claim(5, "e5", "X", "W")])
    assert [r.claim for r in found.refusals] == [X_W]


def test_a_later_repetition_of_a_link_is_redundant():
    (link,) = resolve([X_U]).links.values()
    assert redundant(Claim(5, "e5", "X", "U"), link)
    assert not redundant(Claim(0, "e0", "X", "U"), link)
    assert not redundant(Claim(5, "e5", "X", "W"), link)
    assert not redundant(Claim(5, "e5", "X", "U"), None)


def test_the_claims_an_event_makes():
    assert claims_of("e", 7, "page", "U", "U", "X", {}) == [Claim(7, "e", "X", "U")]
    assert claims_of("e", 7, "page", "X", None, "X", {}) == []
    assert claims_of("e", 7, "page", "U", "U", "U", {}) == []
    assert claims_of("e", 7, "alias", "U2", "U2", None, {"previous_id": "U1"}) == [
        Claim(7, "e", "U1", "U2")
    ]
    # Without a user id the event's person is the user; the same claim twice is one.
    assert claims_of("e", 7, "alias", "X", None, "X", {"previous_id": "Y"}) == [
        Claim(7, "e", "Y", "X")
    ]
    assert claims_of("e", 7, "alias", "U", "U", "X", {"previous_id": "X"}) == [
        Claim(7, "e", "X", "U")
    ]
    assert claims_of("e", 7, "alias", "U", "U", None, {"previous_id": "U"}) == []
    assert claims_of("e", 7, "alias", "U", "U", None, {"previous_id": 5}) == []
    assert claims_of("e", 7, "alias", "U", "U", None, {"previous_id": "x" * 257}) == []


def test_ids_are_owned_by_the_partition_ingest_sends_their_events_to():
    from services.aggregator.linking import Owner
    from services.ingest.publisher import partition_for as ingest_partition
    from shared.events import record_key

    owner = Owner(partitions=(0, 1, 2, 3), held=frozenset({1}))
    for id_ in (f"user-{n}" for n in range(40)):
        partition = ingest_partition(record_key("proj", id_), [0, 1, 2, 3])
        assert owner.partition(("proj", id_)) == partition
        assert owner.local(("proj", id_)) == (partition == 1)
    assert Owner().local(("proj", "anyone"))  # no partitions known: a single aggregator
