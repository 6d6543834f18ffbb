"""Share links' SQL: public links to a funnel's chart, stored as the SHA-256 hash of their
token (256 random bits), with the range and count they show, when they expire and whether
they were revoked. The token is returned once, when the link is made."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.funnel import CountMode
from shared.keys import SHOWN_CHARS, hash_key, new_token
from shared.tables import share_links

TOKEN_PREFIX = "sl_"  # noqa: S105 - what every token starts with, not a secret


@dataclass(frozen=True, slots=True)
class ShareLinkRow:
    id: str
    project_id: str
    funnel_id: str
    prefix: str
    name: str | None
    last_days: int | None
    from_us: int | None
    to_us: int | None
    count: CountMode | None
    created_at_us: int
    expires_at_us: int
    revoked_at_us: int | None


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """What a link shows: the last ``last_days`` days, or [from_us, to_us) (to: now if None)."""

    funnel_id: str
    name: str | None
    last_days: int | None
    from_us: int | None
    to_us: int | None
    count: CountMode | None
    expires_at_us: int


_COLUMNS = (
    share_links.c.id,
    share_links.c.project_id,
    share_links.c.funnel_id,
    share_links.c.prefix,
    share_links.c.name,
    share_links.c.last_days,
    share_links.c.from_us,
    share_links.c.to_us,
    share_links.c["count"],
    share_links.c.created_at_us,
    share_links.c.expires_at_us,
    share_links.c.revoked_at_us,
)


async def create_link(
    session: AsyncSession, project_id: str, spec: LinkSpec, *, now_us: int
) -> tuple[ShareLinkRow, str]:
    """A new link and its token (shown once)."""
    token = new_token(TOKEN_PREFIX)
    link_id = str(uuid.uuid4())
    await session.execute(
        share_links.insert().values(
            id=link_id,
            token_hash=hash_key(token),
            prefix=token[:SHOWN_CHARS],
            project_id=project_id,
            funnel_id=spec.funnel_id,
            name=spec.name,
            last_days=spec.last_days,
            from_us=spec.from_us,
            to_us=spec.to_us,
            count=spec.count,
            created_at_us=now_us,
            expires_at_us=spec.expires_at_us,
        )
    )
    row = await get_link(session, project_id, link_id)
    assert row is not None  # noqa: S101 - inserted just now, in this transaction
    return row, token


async def get_link(session: AsyncSession, project_id: str, link_id: str) -> ShareLinkRow | None:
    stmt = select(*_COLUMNS).where(
        share_links.c.id == link_id, share_links.c.project_id == project_id
    )
    row = (await session.execute(stmt)).first()
    return ShareLinkRow(**row._asdict()) if row else None


async def list_links(
    session: AsyncSession, project_id: str, funnel_id: str | None = None
) -> list[ShareLinkRow]:
    stmt = select(*_COLUMNS).where(share_links.c.project_id == project_id)
    if funnel_id is not None:
        stmt = stmt.where(share_links.c.funnel_id == funnel_id)
    stmt = stmt.order_by(share_links.c.created_at_us, share_links.c.id)
    return [ShareLinkRow(**r._asdict()) for r in await session.execute(stmt)]


async def revoke_link(
    session: AsyncSession, project_id: str, link_id: str, *, now_us: int
) -> ShareLinkRow | None:
    """Revoke a link (again: no change); its row stays, to be listed."""
    await session.execute(
        update(share_links)
        .where(
            share_links.c.id == link_id,
            share_links.c.project_id == project_id,
            share_links.c.revoked_at_us.is_(None),
        )
        .values(revoked_at_us=now_us)
    )
    return await get_link(session, project_id, link_id)


async def find_link(session: AsyncSession, token: str) -> ShareLinkRow | None:
    """The link of a token, revoked and expired ones included (the caller tells them apart)."""
    stmt = select(*_COLUMNS).where(share_links.c.token_hash == hash_key(token))
    row = (await session.execute(stmt)).first()
    return ShareLinkRow(**row._asdict()) if row else None
