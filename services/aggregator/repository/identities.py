"""Identity claims, links and refusals: stored claims, what they resolve to, ids' persons."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ARRAY, Text, any_, bindparam, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator.identity import Claim, Link, Refusal, Resolution
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


@dataclass(frozen=True, slots=True)
class StoredLink:
    link: Link
    root: str


async def stored_links(
    session: AsyncSession, project_id: str, ids: Iterable[str]
) -> dict[str, StoredLink]:
    """The stored links of these ids (ids without one are roots)."""
    c = identity_links.c
    found = {}
    for chunk in _chunks(ids):
        stmt = select(c.id, c.target, c.root, c.ts_us, c.event_id).where(
            c.project_id == project_id, _among(session, c.id, chunk, "ids")
        )
        for id_, target, root, ts, event_id in await session.execute(stmt):
            found[id_] = StoredLink(Link(id_, target, ts, event_id), root)
    return found


async def stored_refusals(
    session: AsyncSession, project_id: str, anons: Iterable[str]
) -> set[tuple[str, str]]:
    """(event id, anonymous id) of the stored refusals of claims of these anonymous ids."""
    c = identity_refusals.c
    found: set[tuple[str, str]] = set()
    for chunk in _chunks(anons):
        stmt = select(c.event_id, c.anon_id).where(
            c.project_id == project_id, _among(session, c.anon_id, chunk, "ids")
        )
        found.update((e, a) for e, a in await session.execute(stmt))
    return found


async def save_resolution(
    session: AsyncSession,
    project_id: str,
    ids: Sequence[str],
    resolution: Resolution,
    stored: Mapping[str, StoredLink],
) -> None:
    """Make the stored links and refusals of the component of ``ids`` equal ``resolution``
    (``stored``: its links as stored now)."""
    roots = resolution.roots()
    gone = [i for i in stored if i not in roots or _row(stored[i]) != _new(resolution, roots, i)]
    li, re_ = identity_links.c, identity_refusals.c
    for chunk in _chunks(gone):
        await session.execute(
            delete(identity_links).where(
                li.project_id == project_id, _among(session, li.id, chunk, "ids")
            )
        )
    rows = [
        {"project_id": project_id, **_new(resolution, roots, i)}
        for i in sorted(roots)
        if i not in stored or i in gone
    ]
    if rows:
        await session.execute(identity_links.insert(), rows)
    for chunk in _chunks(ids):
        await session.execute(
            delete(identity_refusals).where(
                re_.project_id == project_id, _among(session, re_.anon_id, chunk, "ids")
            )
        )
    if resolution.refusals:
        await session.execute(
            identity_refusals.insert(), [_refusal(project_id, r) for r in resolution.refusals]
        )


def _row(s: StoredLink) -> dict[str, Any]:
    link = s.link
    return {"id": link.id, "target": link.target, "root": s.root, "ts_us": link.ts,
            "event_id": link.event_id}  # fmt: skip


def _new(resolution: Resolution, roots: Mapping[str, str], id_: str) -> dict[str, Any]:
    return _row(StoredLink(resolution.links[id_], roots[id_]))


def _refusal(project_id: str, r: Refusal) -> dict[str, Any]:
    c = r.claim
    return {"project_id": project_id, "event_id": c.event_id, "anon_id": c.anon,
            "user_id": c.user, "ts_us": c.ts, "reason": r.reason}  # fmt: skip


@dataclass(slots=True)
class Known:
    """What is stored of some ids' persons: the link of each linked id, and the ids linked
    to each root."""

    links: dict[PersonKey, StoredLink] = field(default_factory=dict)
    members: dict[PersonKey, set[str]] = field(default_factory=lambda: defaultdict(set))

    @property
    def roots(self) -> dict[PersonKey, str]:
        return {key: s.root for key, s in self.links.items()}

    def root(self, key: PersonKey) -> str:
        found = self.links.get(key)
        return found.root if found is not None else key[1]

    def tangled(self, key: PersonKey) -> bool:
        """Whether the id is linked or has ids linked to it."""
        return key in self.links or key in self.members


async def known(
    session: AsyncSession, ids: Iterable[PersonKey], others: Iterable[PersonKey] = ()
) -> Known:
    """The persons of these ids, one statement per project: the link of those that are
    linked, and the ids linked to those that are roots; of the ``others``, only their links."""
    by_project: dict[str, set[str]] = defaultdict(set)
    extra: dict[str, set[str]] = defaultdict(set)
    for project, id_ in ids:
        by_project[project].add(id_)
    for project, id_ in others:
        extra[project].add(id_)
    found = Known()
    c = identity_links.c
    for project in sorted(by_project.keys() | extra.keys()):
        people, also = by_project[project], extra[project]
        for chunk in _chunks(people | also):
            which = _among(session, c.id, chunk, "ids")
            roots = [i for i in chunk if i in people]
            if roots:
                which = or_(which, _among(session, c.root, roots, "roots"))
            stmt = select(c.id, c.target, c.root, c.ts_us, c.event_id).where(
                c.project_id == project, which
            )
            for id_, target, root, ts, event_id in await session.execute(stmt):
                if id_ in people or id_ in also:
                    link = Link(id_, target, ts, event_id)
                    found.links[(project, id_)] = StoredLink(link, root)
                if root in people:
                    found.members[(project, root)].add(id_)
    return found


async def person_ids(session: AsyncSession, project_id: str, root: str) -> list[str]:
    """The person's ids: the root first, then every id linked to it in order."""
    c = identity_links.c
    stmt = select(c.id).where(c.project_id == project_id, c.root == root)
    return [root, *sorted((await session.scalars(stmt)).all())]
