"""Hypothesis strategies: streams of persons under several ids, with links among them.

Ids come from small pools (anonymous ``a0..a4``, users ``u0..u2``) so that what the identity
rules decide happens often: persons with several anonymous ids (one user identified from
several devices), identify events and aliases at random positions of a journey, chains
(an alias from a user id that already has links to one that has none), links refused
because the anonymous id is taken, and merges refused because both user ids have links.
A delivery is the stream shuffled with some events sent again (same event id, same content).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from shared.events import CanonicalEvent
from shared.funnel import US
from tests.oracle_identity import ALIAS, Sent

ANONS = ("a0", "a1", "a2", "a3", "a4")
USERS = ("u0", "u1", "u2")
NAMES = ("a", "b", "c", "x")
KINDS = ("anon", "anon", "anon", "user", "user", "both", "both", "alias", "alias")


@st.composite
def properties(draw: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if draw(st.booleans()):
        found["ch"] = draw(st.sampled_from(["s", "t", 0, ""]))
    if draw(st.booleans()):
        found["n"] = draw(st.integers(0, 2))
    return found


@st.composite
def identified_events(draw: Any, grid: int = 20, most: int = 16) -> list[Sent]:
    """Distinct events (ids ``i0``, ``i1``...) in no time order: anonymous ones, ones under a
    user id, ones under both (an identify, or any event sent after identifying) and aliases
    whose previous id is any id, users' too (chains, refusals and no-ops)."""
    found = []
    for i in range(draw(st.integers(0, most))):
        kind = draw(st.sampled_from(KINDS))
        a, u = draw(st.sampled_from(ANONS)), draw(st.sampled_from(USERS))
        # Coarse times (10 s grid) make ties between claims and window edges common.
        ts = draw(st.integers(0, grid)) * 10 * US
        name = draw(st.sampled_from(NAMES if kind != "both" else (*NAMES, "identify")))
        props = draw(properties())
        eid = f"i{i}"
        if kind == "anon":
            found.append(Sent(eid, ts, name, a, None, a, props))
        elif kind == "user":
            found.append(Sent(eid, ts, name, u, u, None, props))
        elif kind == "both":
            found.append(Sent(eid, ts, name, u, u, a, props))
        else:
            # Half of them from a user id: chains, and merges refused as both have links.
            previous = draw(st.sampled_from(draw(st.sampled_from((ANONS, USERS)))))
            found.append(Sent(eid, ts, ALIAS, u, u, None, {**props, "previous_id": previous}))
    return found


@st.composite
def deliveries(draw: Any, events: list[Sent]) -> list[Sent]:
    """The events shuffled, some sent again."""
    shuffled = draw(st.permutations(events))
    again = draw(st.lists(st.sampled_from(events), max_size=4)) if events else []
    return [*shuffled, *again]


@st.composite
def identity_streams(draw: Any, grid: int = 20, most: int = 16) -> tuple[list[Sent], list[Sent]]:
    """(events, one delivery of them)."""
    events = draw(identified_events(grid, most))
    return events, draw(deliveries(events))


def to_canonical(project: str, e: Sent) -> CanonicalEvent:
    """The event as ingest publishes it."""
    ts = datetime.fromtimestamp(e.ts / US, UTC)
    return CanonicalEvent(
        project_id=project,
        event_id=e.event_id,
        person_id=e.person_id,
        user_id=e.user_id,
        anonymous_id=e.anonymous_id,
        event=e.name,
        timestamp=ts,
        received_at=ts,
        properties=dict(e.properties),
    )


def shifted(events: list[Sent], shift_us: int) -> list[Sent]:
    """The events ``shift_us`` later."""
    return [replace(e, ts=e.ts + shift_us) for e in events]
