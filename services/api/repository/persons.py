"""A person as the API shows it: their ids and links, refused links, when they were seen,
and their entries per funnel."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.tables import events, funnel_entries, funnels, identity_links, identity_refusals

MAX_HOPS = 64  # chains of links are short; a loop (which resolution never makes) ends here


@dataclass(frozen=True, slots=True)
class LinkRow:
    id: str
    target: str
    ts_us: int
    event_id: str


@dataclass(frozen=True, slots=True)
class RefusalRow:
    anon_id: str
    user_id: str
    ts_us: int
    event_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class EntryRow:
    funnel_id: str
    funnel_name: str
    steps: Sequence[str]
    t0_us: int
    reached: int
    step_times: Sequence[int | None]
    disqualified: bool


@dataclass(frozen=True, slots=True)
class PersonRow:
    root: str
    links: list[LinkRow]
    refusals: list[RefusalRow]
    first_seen_us: int | None
    last_seen_us: int | None
    entries: list[EntryRow]


async def root_of(session: AsyncSession, project_id: str, id_: str) -> str:
    """The id's person's root: the id its links lead to."""
    c = identity_links.c
    seen = {id_}
    for _ in range(MAX_HOPS):
        target = await session.scalar(
            select(c.target).where(c.project_id == project_id, c.id == id_)
        )
        if target is None or target in seen:
            break
        seen.add(target)
        id_ = target
    return id_


async def linked(session: AsyncSession, project_id: str, root: str) -> list[LinkRow]:
    """Every link leading to ``root``, through chains of links."""
    c = identity_links.c
    found: dict[str, LinkRow] = {}
    frontier = [root]
    for _ in range(MAX_HOPS):
        if not frontier:
            break
        rows = await session.execute(
            select(c.id, c.target, c.ts_us, c.event_id).where(
                c.project_id == project_id, c.target.in_(frontier)
            )
        )
        fresh = [LinkRow(*r) for r in rows if r.id not in found and r.id != root]
        found.update((r.id, r) for r in fresh)
        frontier = [r.id for r in fresh]
    return sorted(found.values(), key=lambda r: r.id)


async def person(session: AsyncSession, project_id: str, id_: str) -> PersonRow | None:
    """The person of any of their ids, or None when no event or link names the id."""
    root = await root_of(session, project_id, id_)
    links = await linked(session, project_id, root)
    ids = sorted({root, *(link.id for link in links)})
    e = events.c
    first, last = (
        await session.execute(
            select(func.min(e.ts_us), func.max(e.ts_us)).where(
                e.project_id == project_id, e.person_id.in_(ids)
            )
        )
    ).one()
    if first is None and not links and root == id_:
        return None
    r = identity_refusals.c
    refused = await session.execute(
        select(r.anon_id, r.user_id, r.ts_us, r.event_id, r.reason)
        .where(r.project_id == project_id, or_(r.anon_id.in_(ids), r.user_id.in_(ids)))
        .order_by(r.ts_us, r.event_id, r.anon_id)
    )
    return PersonRow(
        root,
        links,
        [RefusalRow(*row) for row in refused],
        first,
        last,
        await _entries(session, project_id, root),
    )


async def _entries(session: AsyncSession, project_id: str, root: str) -> list[EntryRow]:
    f, en = funnels.c, funnel_entries.c
    rows = await session.execute(
        select(f.id, f.name, f.definition, en.t0_us, en.reached, en.step_times, en.disqualified)
        .join(funnel_entries, en.funnel_id == f.id)
        .where(f.project_id == project_id, en.person_id == root)
        .order_by(f.name, f.id, en.t0_us)
    )
    return [
        EntryRow(id_, name, _step_names(doc), t0, reached, times, disqualified)
        for id_, name, doc, t0, reached, times, disqualified in rows
    ]


def _step_names(doc: Any) -> list[str]:
    steps = doc.get("steps", []) if isinstance(doc, dict) else []
    return [str(s.get("name") or s.get("event") or f"step {i}") for i, s in enumerate(steps, 1)]
