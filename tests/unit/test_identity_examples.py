"""The examples of the identity rules (#21), through the aggregator's resolution and the
oracle's alike: links (with the claim that made each) and refusals (with their reasons)."""

from __future__ import annotations

import itertools

import pytest

from services.aggregator import identity
from tests.oracle_identity import Sent, identities
from tests.unit.test_oracle_identity import SIGNUP, alias, anon, identify, user


def aggregator(events: list[Sent]) -> tuple[dict[str, tuple[str, str]], list[tuple[str, ...]]]:
    found = identity.resolve(
        c
        for e in events
        for c in identity.claims_of(
            e.event_id, e.ts, e.name, e.person_id, e.user_id, e.anonymous_id, e.properties
        )
    )
    links = {i: (x.target, x.event_id) for i, x in found.links.items()}
    refusals = [(r.claim.anon, r.claim.user, r.claim.event_id, r.reason) for r in found.refusals]
    return links, sorted(refusals)


def oracle(events: list[Sent]) -> tuple[dict[str, tuple[str, str]], list[tuple[str, ...]]]:
    """The oracle's resolution, its refusals recorded once per pair of ids (at the pair's
    first refused claim), as the README says they are kept."""
    found = identities(events)
    links = {i: (c.user, c.event_id) for i, c in found.target.items()}
    pairs: dict[tuple[str, str], tuple[str, ...]] = {}
    for r in found.refusals:  # in claim order
        pairs.setdefault(
            (r.claim.anon, r.claim.user), (r.claim.anon, r.claim.user, r.claim.event_id, r.reason)
        )
    return links, sorted(pairs.values())


EXAMPLES = {
    "sign-up": SIGNUP,
    "sign-up, identify twice": [*SIGNUP, SIGNUP[1]],
    "second user refused": [identify("X", "U", 1), identify("X", "W", 2)],
    "chain": [identify("X", "U1", 1), alias("U1", "U2", 2)],
    "both have links": [identify("X", "U1", 1), identify("Y", "U2", 2), alias("U1", "U2", 3)],
    "one person already": [identify("X", "U", 1), alias("U", "X", 2)],
    "alias from an anonymous person id": [
        Sent("a", 1, "alias", "X2", None, "X2", {"previous_id": "X1"})
    ],
    "identify and alias in one event": [
        Sent("a", 1, "alias", "U", "U", "Z", {"previous_id": "B"}),
        anon("Z", "landing", 0),
        user("U", "buy", 5),
    ],
}


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_rules_examples_in_any_arrival_order_resolve_as_the_oracle(name):
    events = EXAMPLES[name]
    want = oracle(events)
    for order in itertools.permutations(events):
        assert aggregator(list(order)) == want


def test_a_pair_refused_twice_is_one_refusal_at_its_first_claim():
    """Two events claiming X is W's after X became U's: both are refused, and the pair is
    recorded once, by the first of them."""
    events = [identify("X", "U", 1), identify("X", "W", 2), identify("X", "W", 3)]
    assert len(identities(events).refusals) == 2
    for order in itertools.permutations(events):
        assert aggregator(list(order)) == oracle(events)
    (refused,) = oracle(events)[1]
    assert refused[:3] == ("X", "W", events[1].event_id)
