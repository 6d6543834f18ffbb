"""The oracle's identity merge, rule by rule, with the examples of the identity rules (#21)."""

from __future__ import annotations

import itertools

from shared.funnel import US
from tests.helpers import funnel
from tests.oracle import oracle_report
from tests.oracle_identity import Claim, Sent, identities, persons, resolve

FAR = 10**9 * US


def anon(x: str, name: str, t: int, eid: str | None = None) -> Sent:
    return Sent(eid or f"{x}-{name}-{t}", t * US, name, x, None, x)


def user(u: str, name: str, t: int, eid: str | None = None) -> Sent:
    return Sent(eid or f"{u}-{name}-{t}", t * US, name, u, u, None)


def identify(x: str, u: str, t: int, name: str = "identify") -> Sent:
    return Sent(f"{x}>{u}-{t}", t * US, name, u, u, x)


def alias(previous: str, u: str, t: int) -> Sent:
    return Sent(f"alias-{previous}>{u}-{t}", t * US, "alias", u, u, None, {"previous_id": previous})


def steps(events: list[Sent], *names: str) -> list[int]:
    return oracle_report(funnel(*names), persons(events), 0, FAR, FAR).persons


SIGNUP = [anon("X", "landing", 1), identify("X", "U", 2), user("U", "purchase", 3)]


def test_an_anonymous_visitor_who_identifies_and_buys_is_one_person_reaching_every_step():
    assert persons(SIGNUP).keys() == {"U"}
    assert steps(SIGNUP, "landing", "identify", "purchase") == [1, 1, 1]
    assert identities(SIGNUP).ids("X") == ["U", "X"]


def test_the_identify_delivered_first_last_or_twice_gives_the_same_persons():
    want = persons(SIGNUP)
    for order in itertools.permutations(SIGNUP):
        assert persons(order) == want
        assert persons([*order, SIGNUP[1]]) == want


def test_an_anonymous_id_links_to_one_user_id_only():
    first, second = identify("X", "U", 1, "a"), identify("X", "W", 2, "b")
    for stream in ([first, second], [second, first], [second, first, second]):
        found = identities(stream)
        assert found.root("X") == "U"
        assert found.root("W") == "W"
        [refused] = found.refusals
        assert refused.claim == Claim(2 * US, second.event_id, "X", "W")
        assert refused.reason == "already linked to U"
        # The refused event still counts, for the id its person_id names.
        assert {p: [e.name for e in es] for p, es in persons(stream).items()} == {
            "U": ["a"],
            "W": ["b"],
        }


def test_a_chain_of_links_is_one_person():
    stream = [identify("X", "U1", 1), alias("U1", "U2", 2), user("U2", "buy", 3)]
    found = identities(stream)
    assert found.ids("X") == found.ids("U1") == found.ids("U2") == ["U2", "U1", "X"]
    assert not found.refusals
    assert persons(stream).keys() == {"U2"}


def test_two_user_ids_that_both_have_links_of_their_own_are_never_merged():
    stream = [identify("X", "U1", 1), identify("Y", "U2", 2), alias("U1", "U2", 3)]
    found = identities(stream)
    assert found.root("X") == "U1"
    assert found.root("Y") == "U2"
    [refused] = found.refusals
    assert (refused.claim.anon, refused.claim.user, refused.reason) == (
        "U1",
        "U2",
        "both already have links",
    )
    assert persons(stream).keys() == {"U1", "U2"}


def test_a_claim_between_ids_of_one_person_is_no_refusal():
    stream = [identify("X", "U", 1), alias("U", "X", 2), identify("X", "U", 3)]
    found = identities(stream)
    assert found.ids("U") == ["U", "X"]
    assert not found.refusals


def test_claims_are_judged_in_time_then_event_id_order_whatever_their_arrival():
    claims = [Claim(5, "e2", "X", "W"), Claim(5, "e1", "X", "U"), Claim(1, "e9", "Y", "W")]
    for order in itertools.permutations(claims):
        found = resolve([*order, order[0]])
        assert {i: c.user for i, c in found.target.items()} == {"X": "U", "Y": "W"}
        assert [r.claim.event_id for r in found.refusals] == ["e2"]


def test_an_id_with_links_may_join_a_user_id_without_any():
    # X -> U, then U -> W (W has no links): W = {W, U, X}; later Y -> U joins W's person too.
    claims = [Claim(1, "a", "X", "U"), Claim(2, "b", "U", "W"), Claim(3, "c", "Y", "U")]
    found = resolve(claims)
    assert found.ids("Y") == ["W", "U", "X", "Y"]
    assert not found.refusals


def test_an_alias_to_its_own_user_id_and_an_event_naming_one_id_twice_claim_nothing():
    stream = [
        Sent("a", US, "alias", "U", "U", None, {"previous_id": "U"}),
        Sent("b", 2 * US, "alias", "V", None, "V", {"previous_id": "V"}),
        Sent("c", 3 * US, "identify", "U", "U", "U"),
    ]
    found = identities(stream)
    assert not found.target
    assert not found.refusals


def test_an_alias_without_a_user_id_links_to_the_id_its_person_id_names():
    stream = [Sent("a", US, "alias", "X2", None, "X2", {"previous_id": "X1"})]
    assert identities(stream).ids("X1") == ["X2", "X1"]


def test_an_event_with_both_ids_and_an_alias_makes_two_claims_in_anon_order():
    e = Sent("a", US, "alias", "U", "U", "Z", {"previous_id": "B"})
    found = identities([e])
    assert found.ids("U") == ["U", "B", "Z"]
