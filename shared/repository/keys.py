"""Projects and their API keys in the database (see :mod:`shared.keys` for what a key is).

Used by ingest (write-key lookups), the API (grants; projects and keys) and ``funnel keys``.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import insert_ignoring
from shared.keys import (
    PREFIX,
    SHOWN_CHARS,
    InstanceGrant,
    IssuedKey,
    KeyGrant,
    KeyRow,
    Scope,
    hash_key,
    new_token,
)
from shared.tables import api_keys, projects


async def project_exists(session: AsyncSession, project_id: str) -> bool:
    found = await session.scalar(select(projects.c.id).where(projects.c.id == project_id))
    return found is not None


async def ensure_project(session: AsyncSession, project_id: str, *, now_us: int) -> None:
    if not await project_exists(session, project_id):
        await session.execute(projects.insert().values(id=project_id, created_at_us=now_us))


async def issue_key(
    session: AsyncSession,
    project_id: str | None,
    scope: Scope,
    name: str | None = None,
    *,
    now_us: int,
) -> IssuedKey:
    """A new key of an existing project (``None``: an instance key)."""
    if (scope == "instance") != (project_id is None):
        raise ValueError("an instance key has no project; every other key has one")
    key = new_token(PREFIX[scope])
    row = KeyRow(str(uuid.uuid4()), key[:SHOWN_CHARS], scope, project_id, name, now_us, None)
    await session.execute(
        api_keys.insert().values(
            key_hash=hash_key(key),
            id=row.id,
            prefix=row.prefix,
            project_id=project_id,
            scope=scope,
            name=name,
            created_at_us=row.created_at_us,
        )
    )
    return IssuedKey(row, key)


async def find_grant(session: AsyncSession, key: str) -> KeyGrant | InstanceGrant | None:
    """What a key that is not revoked allows."""
    row = (
        await session.execute(
            select(api_keys.c.id, api_keys.c.project_id, api_keys.c.scope).where(
                api_keys.c.key_hash == hash_key(key), api_keys.c.revoked_at_us.is_(None)
            )
        )
    ).first()
    if row is None:
        return None
    if row.project_id is None:
        return InstanceGrant(row.id)
    return KeyGrant(row.project_id, row.scope)


async def find_key(session: AsyncSession, key: str) -> KeyGrant | None:
    """A project's key that is not revoked (instance keys are not project keys)."""
    grant = await find_grant(session, key)
    return grant if isinstance(grant, KeyGrant) else None


_ROW = (
    api_keys.c.id,
    api_keys.c.prefix,
    api_keys.c.scope,
    api_keys.c.project_id,
    api_keys.c.name,
    api_keys.c.created_at_us,
    api_keys.c.revoked_at_us,
)


async def list_keys(
    session: AsyncSession, project_id: str | None, *, every: bool = False
) -> list[KeyRow]:
    """A project's keys (``None``: the instance keys; ``every``: all keys), oldest first."""
    stmt = select(*_ROW).order_by(api_keys.c.created_at_us, api_keys.c.id)
    if not every:
        stmt = stmt.where(
            api_keys.c.project_id.is_(None)
            if project_id is None
            else api_keys.c.project_id == project_id
        )
    return [KeyRow(*r) for r in await session.execute(stmt)]


async def get_key(session: AsyncSession, key_id: str) -> KeyRow | None:
    row = (await session.execute(select(*_ROW).where(api_keys.c.id == key_id))).first()
    return KeyRow(*row) if row else None


async def revoke_key(session: AsyncSession, key_id: str, *, now_us: int) -> KeyRow | None:
    """Revoke a key (again: no change); its row stays, to be listed."""
    await session.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at_us.is_(None))
        .values(revoked_at_us=now_us)
    )
    return await get_key(session, key_id)


async def create_project(session: AsyncSession, project_id: str, *, now_us: int) -> int | None:
    """Create a project; its creation instant, or ``None`` if it exists already."""
    inserted = await session.execute(
        insert_ignoring(session, projects)
        .values(id=project_id, created_at_us=now_us)
        .on_conflict_do_nothing()
    )
    return now_us if inserted.rowcount else None  # type: ignore[attr-defined]


async def list_projects(session: AsyncSession, only: str | None = None) -> list[tuple[str, int]]:
    """Projects (id, created) by id; ``only``: that one project."""
    stmt = select(projects.c.id, projects.c.created_at_us).order_by(projects.c.id)
    if only is not None:
        stmt = stmt.where(projects.c.id == only)
    return [(r.id, r.created_at_us) for r in await session.execute(stmt)]
