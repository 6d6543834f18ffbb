"""Projects and their API keys (stored as SHA-256 hashes; keys are 256-bit random tokens).

A key of scope ``write``, ``read`` or ``admin`` belongs to one project. An ``instance`` key
belongs to none: it may create and list projects and manage any project's keys, and nothing
else (it reads no funnel and sends no event).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.clock import now_us as now_us  # the API imports it from here too
from shared.db import insert_ignoring
from shared.tables import api_keys, projects

Scope = Literal["write", "read", "admin", "instance"]
ProjectScope = Literal["write", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("write", "read", "admin", "instance")
PREFIX = {"write": "wk_", "read": "rk_", "admin": "ak_", "instance": "ik_"}
SHOWN_CHARS = 8  # of a key, kept to tell keys apart: the scope's prefix and 5 random characters


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """What a project's key allows."""

    project_id: str
    scope: Scope


@dataclass(frozen=True, slots=True)
class InstanceGrant:
    """An instance key: projects and their keys, no project's data."""

    key_id: str


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    prefix: str | None
    scope: Scope
    project_id: str | None
    name: str | None
    created_at_us: int
    revoked_at_us: int | None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    row: KeyRow
    key: str  # the plain key: returned once, never stored


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def project_exists(session: AsyncSession, project_id: str) -> bool:
    found = await session.scalar(select(projects.c.id).where(projects.c.id == project_id))
    return found is not None


async def ensure_project(session: AsyncSession, project_id: str) -> None:
    if not await project_exists(session, project_id):
        await session.execute(projects.insert().values(id=project_id, created_at_us=now_us()))


async def issue_key(
    session: AsyncSession, project_id: str | None, scope: Scope, name: str | None = None
) -> IssuedKey:
    """A new key of an existing project (``None``: an instance key)."""
    if (scope == "instance") != (project_id is None):
        raise ValueError("an instance key has no project; every other key has one")
    key = PREFIX[scope] + secrets.token_urlsafe(32)
    row = KeyRow(str(uuid.uuid4()), key[:SHOWN_CHARS], scope, project_id, name, now_us(), None)
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


async def create_key(session: AsyncSession, project_id: str, scope: Scope) -> str:
    """Create a project's key (and the project if new); the plain key is returned once."""
    await ensure_project(session, project_id)
    return (await issue_key(session, project_id, scope)).key


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


async def revoke_key(session: AsyncSession, key_id: str) -> KeyRow | None:
    """Revoke a key (again: no change); its row stays, to be listed."""
    await session.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at_us.is_(None))
        .values(revoked_at_us=now_us())
    )
    return await get_key(session, key_id)


async def create_project(session: AsyncSession, project_id: str) -> int | None:
    """Create a project; its creation instant, or ``None`` if it exists already."""
    stamp = now_us()
    inserted = await session.execute(
        insert_ignoring(session, projects)
        .values(id=project_id, created_at_us=stamp)
        .on_conflict_do_nothing()
    )
    return stamp if inserted.rowcount else None  # type: ignore[attr-defined]


async def list_projects(session: AsyncSession, only: str | None = None) -> list[tuple[str, int]]:
    """Projects (id, created) by id; ``only``: that one project."""
    stmt = select(projects.c.id, projects.c.created_at_us).order_by(projects.c.id)
    if only is not None:
        stmt = stmt.where(projects.c.id == only)
    return [(r.id, r.created_at_us) for r in await session.execute(stmt)]
