"""Identity claims, links and refusals: stored claims, what they resolve to, ids' persons."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ARRAY, Text, any_, bindparam, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator.identity import Claim, Link, Refusal
from services.aggregator.person_cache import PersonKey
from services.aggregator.repository.scan import CHUNK
from shared.db import insert_ignoring, is_postgres
from shared.tables import identity_claims, identity_links, identity_refusals

# At most this many claims are read for one connected component of claims (one anonymous
# id claimed by thousands of user ids): past it, the claims read so far are resolved.
MAX_COMPONENT_CLAIMS = 20_000


def _among(session: AsyncSession, column: Any, values: Sequence[str], name: str) -> Any:
    """``column IN values``: one array parameter on PostgreSQL."""
    if is_postgres(session):
        return column == any_(bindparam(name, list(values), type_=ARRAY(Text)))
    return column.in_(list(values))


def _chunks(values: Iterable[str]) -> Iterable[list[str]]:
    ordered = sorted(set(values))
    for i in range(0, len(ordered), CHUNK * 10):
        yield ordered[i : i + CHUNK * 10]


async def add_claims(session: AsyncSession, project_id: str, claims: Sequence[Claim]) -> None:
    """Store claims not stored before (by project, event and anonymous id)."""
    if not claims:
        return
    rows = [
        {
            "project_id": project_id,
            "event_id": c.event_id,
            "anon_id": c.anon,
            "user_id": c.user,
            "ts_us": c.ts,
        }
        for c in claims
    ]
    await session.execute(insert_ignoring(session, identity_claims).on_conflict_do_nothing(), rows)


async def component(session: AsyncSession, project_id: str, seeds: Iterable[str]) -> list[Claim]:
    """Every stored claim connected to the ``seeds`` ids through claims (bounded)."""
    c = identity_claims.c
    seen: set[str] = set()
    frontier = set(seeds)
    found: dict[tuple[str, str], Claim] = {}
    while frontier and len(found) < MAX_COMPONENT_CLAIMS:
        seen |= frontier
        fresh: set[str] = set()
        for chunk in _chunks(frontier):
            stmt = select(c.event_id, c.anon_id, c.user_id, c.ts_us).where(
                c.project_id == project_id,
                or_(_among(session, c.anon_id, chunk, "a"), _among(session, c.user_id, chunk, "u")),
            )
            for event_id, anon, user, ts in await session.execute(stmt):
                found.setdefault((event_id, anon), Claim(ts, event_id, anon, user))
                fresh.update((anon, user))
        frontier = fresh - seen
    return list(found.values())


async def stored_links(
    session: AsyncSession, project_id: str, ids: Iterable[str]
) -> dict[str, Link]:
    """The stored links of these ids (ids without one are roots)."""
    c = identity_links.c
    found = {}
    for chunk in _chunks(ids):
        stmt = select(c.id, c.target, c.ts_us, c.event_id).where(
            c.project_id == project_id, _among(session, c.id, chunk, "ids")
        )
        for id_, target, ts, event_id in await session.execute(stmt):
            found[id_] = Link(id_, target, ts, event_id)
    return found


async def stored_refusals(
    session: AsyncSession, project_id: str, anons: Iterable[str]
) -> dict[tuple[str, str], Refusal]:
    """The stored refusals of claims of these anonymous ids, by (event id, anonymous id)."""
    c = identity_refusals.c
    found: dict[tuple[str, str], Refusal] = {}
    for chunk in _chunks(anons):
        stmt = select(c.event_id, c.anon_id, c.user_id, c.ts_us, c.reason).where(
            c.project_id == project_id, _among(session, c.anon_id, chunk, "ids")
        )
        for event_id, anon, user, ts, reason in await session.execute(stmt):
            found[(event_id, anon)] = Refusal(Claim(ts, event_id, anon, user), reason)
    return found


async def save_links(
    session: AsyncSession,
    project_id: str,
    ids: Sequence[str],
    links: dict[str, Link],
    refusals: Sequence[Refusal],
    stored: dict[str, Link],
    refused: dict[tuple[str, str], Refusal],
) -> None:
    """Make the stored links and refusals of ``ids`` (as anonymous ids) equal ``links``
    and ``refusals`` (``stored`` and ``refused``: as stored now). Only rows that differ
    are written: an id claimed by thousands keeps its thousands of refusals as they are."""
    mine = set(ids)
    gone = [i for i in mine if i in stored and links.get(i) != stored[i]]
    li, re_ = identity_links.c, identity_refusals.c
    for chunk in _chunks(gone):
        await session.execute(
            delete(identity_links).where(
                li.project_id == project_id, _among(session, li.id, chunk, "ids")
            )
        )
    rows = [
        {"project_id": project_id, "id": i, "target": link.target, "ts_us": link.ts,
         "event_id": link.event_id}
        for i, link in sorted(links.items())
        if i in mine and stored.get(i) != link
    ]  # fmt: skip
    if rows:
        await session.execute(identity_links.insert(), rows)
    wanted = {(r.claim.event_id, r.claim.anon): r for r in refusals if r.claim.anon in mine}
    stale = [key for key, r in refused.items() if wanted.get(key) != r]
    for event_id, anon in stale:
        await session.execute(
            delete(identity_refusals).where(
                re_.project_id == project_id, re_.event_id == event_id, re_.anon_id == anon
            )
        )
    new = [_refusal(project_id, r) for key, r in wanted.items() if refused.get(key) != r]
    if new:
        await session.execute(identity_refusals.insert(), new)


def _refusal(project_id: str, r: Refusal) -> dict[str, Any]:
    c = r.claim
    return {"project_id": project_id, "event_id": c.event_id, "anon_id": c.anon,
            "user_id": c.user, "ts_us": c.ts, "reason": r.reason}  # fmt: skip


@dataclass(slots=True)
class Known:
    """What is stored of some ids' persons: the links seen, and each root's linked ids
    (through chains of links)."""

    links: dict[PersonKey, Link] = field(default_factory=dict)
    members: dict[PersonKey, set[str]] = field(default_factory=lambda: defaultdict(set))

    def root(self, key: PersonKey) -> str:
        id_, seen = key[1], set()
        while (link := self.links.get((key[0], id_))) is not None and id_ not in seen:
            seen.add(id_)
            id_ = link.target
        return id_

    def tangled(self, key: PersonKey) -> bool:
        """Whether the id is linked or has ids linked to it."""
        return key in self.links or bool(self.members.get(key))


async def known(
    session: AsyncSession, ids: Iterable[PersonKey], others: Iterable[PersonKey] = ()
) -> Known:
    """The persons of these ids: their links up to their roots and every id linked to those
    roots; of the ``others``, their links only. One statement per project for ids without
    links (the common case), a few more along chains of links."""
    wanted = set(ids)
    found = Known()
    children: dict[PersonKey, set[str]] = defaultdict(set)
    asked_up: set[PersonKey] = set()
    asked_down: set[PersonKey] = set()
    up, down = wanted | set(others), set(wanted)
    while up or down:
        await _links_round(session, up, down, found, children)
        asked_up |= up
        asked_down |= down
        up = {(p, link.target) for (p, _), link in found.links.items()} - asked_up
        roots = {(k[0], found.root(k)) for k in wanted}
        below = {(p, child) for key in asked_down for p, child in _keyed(key, children)}
        down = (roots | below) - asked_down
    for key in wanted:
        root = (key[0], found.root(key))
        if root not in found.members:
            found.members[root] = _descendants(root, children)
    return found


def _keyed(key: PersonKey, children: dict[PersonKey, set[str]]) -> Iterable[PersonKey]:
    return ((key[0], child) for child in children.get(key, ()))


def _descendants(root: PersonKey, children: dict[PersonKey, set[str]]) -> set[str]:
    found: set[str] = set()
    todo = [root]
    while todo:
        for child in _keyed(todo.pop(), children):
            if child[1] not in found and child != root:
                found.add(child[1])
                todo.append(child)
    return found


async def _links_round(
    session: AsyncSession,
    up: set[PersonKey],
    down: set[PersonKey],
    found: Known,
    children: dict[PersonKey, set[str]],
) -> None:
    """Read the links of the ``up`` ids and the links to the ``down`` ids."""
    by_project: dict[str, tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
    for project, id_ in up:
        by_project[project][0].add(id_)
    for project, id_ in down:
        by_project[project][1].add(id_)
    c = identity_links.c
    for project, (ups, downs) in sorted(by_project.items()):
        which = []
        if ups:
            which.append(_among(session, c.id, sorted(ups), "ids"))
        if downs:
            which.append(_among(session, c.target, sorted(downs), "targets"))
        stmt = select(c.id, c.target, c.ts_us, c.event_id).where(
            c.project_id == project, or_(*which)
        )
        for id_, target, ts, event_id in await session.execute(stmt):
            found.links[(project, id_)] = Link(id_, target, ts, event_id)
            children[(project, target)].add(id_)


async def person_ids(session: AsyncSession, project_id: str, person: str) -> tuple[str, list[str]]:
    """The root of the id's person and the person's ids: the root first, then every id
    linked to it in order."""
    found = await known(session, [(project_id, person)])
    root = found.root((project_id, person))
    return root, [root, *sorted(found.members.get((project_id, root), ()))]
