"""Identity merge: the claims an event makes and what a set of claims resolves to. Pure.

An event carrying both a user id and an anonymous id claims that the anonymous id is the
user's; an ``alias`` event claims that ``properties.previous_id`` is. Resolution is a
function of the set of a project's claims, never of their arrival order: claims are taken
in (time, event id, anonymous id, user id) order and each either links its anonymous id to
its user id or is refused (README, "Funnel semantics", identity). A person is the root of
an id: the id reached by following links until one has none.

Resolution only looks at the trees the two ids of a claim belong to, so the claims of one
connected component (ids joined by claims) resolve alike alone or among all of a project's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ALIAS = "alias"
MAX_ID = 256  # the length of an id column: longer ids claim nothing
ALREADY_LINKED = "already_linked"  # the metric's label for "already linked to ..."
BOTH_LINKED = "both_have_links"


@dataclass(frozen=True, slots=True, order=True)
class Claim:
    """That ``anon`` is ``user``'s, claimed by event ``event_id`` at ``ts`` (µs)."""

    ts: int
    event_id: str
    anon: str
    user: str


@dataclass(frozen=True, slots=True)
class Link:
    """``id`` linked to ``target`` by the claim of ``event_id`` at ``ts``."""

    id: str
    target: str
    ts: int
    event_id: str


@dataclass(frozen=True, slots=True)
class Refusal:
    claim: Claim
    reason: str

    @property
    def kind(self) -> str:
        """The reason without the ids it names (a metric label)."""
        return ALREADY_LINKED if self.reason.startswith("already") else BOTH_LINKED


@dataclass(slots=True)
class Resolution:
    """Each linked id's link (every other id is a root) and the refused claims."""

    links: dict[str, Link] = field(default_factory=dict)
    refusals: list[Refusal] = field(default_factory=list)

    def root(self, id_: str) -> str:
        seen = id_
        while (link := self.links.get(seen)) is not None:
            seen = link.target
        return seen

    def roots(self) -> dict[str, str]:
        """The root of every linked id."""
        return {id_: self.root(id_) for id_ in self.links}


def _usable(id_: Any) -> bool:
    return isinstance(id_, str) and 0 < len(id_) <= MAX_ID and "\x00" not in id_


def claims_of(
    event_id: str,
    ts: int,
    name: str,
    person_id: str,
    user_id: str | None,
    anonymous_id: str | None,
    properties: Mapping[str, Any],
) -> list[Claim]:
    """The claims one event makes (at most two)."""
    found = []
    if user_id and anonymous_id and user_id != anonymous_id:
        found.append(Claim(ts, event_id, anonymous_id, user_id))
    if name == ALIAS:
        previous = properties.get("previous_id")
        user = user_id or person_id
        if isinstance(previous, str) and _usable(previous) and previous != user:
            claim = Claim(ts, event_id, previous, user)
            if claim not in found:
                found.append(claim)
    return found


def resolve(claims: Iterable[Claim]) -> Resolution:
    """What a set of claims links and refuses (duplicates of a claim count once).

    A refusal is recorded once per pair of ids, for the earliest claim of the pair: a
    pair's later claims are refused for the same reason or change nothing, so whether they
    are among the claims at all changes no link (see ``redundant``)."""
    out = Resolution()
    linked_to: set[str] = set()  # ids some id is linked to: roots with links of their own
    refused: set[tuple[str, str]] = set()
    for c in sorted(set(claims)):
        if c.anon == c.user or out.root(c.anon) == out.root(c.user):
            continue
        pair = (c.anon, c.user)
        if (link := out.links.get(c.anon)) is not None:
            if pair not in refused:
                out.refusals.append(Refusal(c, f"already linked to {link.target}"))
        elif c.anon in linked_to and out.root(c.user) in linked_to:
            if pair not in refused:
                out.refusals.append(Refusal(c, "both already have links"))
        else:
            out.links[c.anon] = Link(c.anon, c.user, c.ts, c.event_id)
            linked_to.add(c.user)
            continue
        refused.add(pair)
    return out


def redundant(claim: Claim, link: Link | None) -> bool:
    """Whether the claim repeats, later, the link its anonymous id has: then it links
    nothing among any set of claims that holds the link's own claim, so it need not be
    stored (an identified SDK sends both ids with every event)."""
    return (
        link is not None
        and link.target == claim.user
        and (link.ts, link.event_id) < (claim.ts, claim.event_id)
    )
