"""The oracle's identity merge: which ids are one person, by brute force.

Written from docs of the rules (identity merge, issue 21) alone; it shares no code with the
aggregator's resolution. A project's events yield claims (an anonymous id names a user id);
the links are a pure function of the *set* of claims, so arrival order and duplicates cannot
matter. A person is the root of its ids' links, and its events are those of all its ids, as
if sent under the root from the start: that is what ``persons`` hands to ``oracle_report``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.aggregator.engine import PersonEvent
from shared.events import CanonicalEvent, to_micros

ALIAS = "alias"


@dataclass(frozen=True)
class Sent:
    """One event with the ids it was sent under (``person_id``: user id, else anonymous)."""

    event_id: str
    ts: int  # µs
    name: str
    person_id: str
    user_id: str | None = None
    anonymous_id: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)

    def as_person_event(self) -> PersonEvent:
        return PersonEvent(self.event_id, self.ts, self.name, dict(self.properties))


@dataclass(frozen=True, order=True)
class Claim:
    """``anon`` says it is ``user``, at the claiming event's time; fields in sort order."""

    ts: int
    event_id: str
    anon: str
    user: str


@dataclass(frozen=True)
class Refusal:
    claim: Claim
    reason: str


@dataclass(frozen=True)
class Identities:
    """``target[id]``: the id it is linked to, with the claim that linked it."""

    target: Mapping[str, Claim]
    refusals: tuple[Refusal, ...]

    def root(self, x: str) -> str:
        while x in self.target:
            x = self.target[x].user
        return x

    def ids(self, x: str) -> list[str]:
        """The person's root first, then every id linked to it (through chains), sorted."""
        root = self.root(x)
        return [root, *sorted(i for i in self.target if self.root(i) == root)]


def from_canonical(e: CanonicalEvent) -> Sent:
    return Sent(
        e.event_id,
        to_micros(e.timestamp),
        e.event,
        e.person_id,
        e.user_id,
        e.anonymous_id,
        dict(e.properties),
    )


def unique(events: Iterable[Sent]) -> list[Sent]:
    """Deduplicated by event id (the first stored wins), in no particular order."""
    found: dict[str, Sent] = {}
    for e in events:
        found.setdefault(e.event_id, e)
    return list(found.values())


def claims_of(e: Sent) -> list[Claim]:
    found = []
    if e.user_id and e.anonymous_id and e.user_id != e.anonymous_id:
        found.append(Claim(e.ts, e.event_id, e.anonymous_id, e.user_id))
    previous = e.properties.get("previous_id") if e.name == ALIAS else None
    user = e.user_id or e.person_id
    if isinstance(previous, str) and previous and previous != user:
        found.append(Claim(e.ts, e.event_id, previous, user))
    return found


def resolve(claims: Iterable[Claim]) -> Identities:
    """Claims in (ts, event_id, anon, user) order; each links, changes nothing or is refused,
    judged on the links made by the claims before it."""
    target: dict[str, Claim] = {}
    refusals: list[Refusal] = []
    done = Identities(target, ())

    def has_own_links(root: str) -> bool:
        return any(done.root(i) == root for i in target if i != root)

    for c in sorted(set(claims)):
        if done.root(c.anon) == done.root(c.user):
            continue
        if c.anon in target:
            refusals.append(Refusal(c, f"already linked to {target[c.anon].user}"))
        elif has_own_links(c.anon) and has_own_links(done.root(c.user)):
            refusals.append(Refusal(c, "both already have links"))
        else:
            target[c.anon] = c
    return Identities(dict(target), tuple(refusals))


def identities(events: Iterable[Sent]) -> Identities:
    return resolve(c for e in unique(events) for c in claims_of(e))


def persons(events: Iterable[Sent]) -> dict[str, list[PersonEvent]]:
    """Each person (root id) with the events of all its ids in time order, for ``oracle_report``."""
    kept = unique(events)
    found = identities(kept)
    by_person: dict[str, list[PersonEvent]] = {}
    for e in sorted(kept, key=lambda e: (e.ts, e.event_id)):
        by_person.setdefault(found.root(e.person_id), []).append(e.as_person_event())
    return by_person
