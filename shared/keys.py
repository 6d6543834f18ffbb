"""Projects and their API keys (stored as SHA-256 hashes; keys are 256-bit random tokens)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.clock import now_us as now_us  # the API imports it from here too
from shared.tables import api_keys, projects

Scope = Literal["write", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("write", "read", "admin")
PREFIX = {"write": "wk_", "read": "rk_", "admin": "ak_"}


@dataclass(frozen=True, slots=True)
class KeyGrant:
    project_id: str
    scope: Scope


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def ensure_project(session: AsyncSession, project_id: str) -> None:
    found = await session.scalar(select(projects.c.id).where(projects.c.id == project_id))
    if found is None:
        await session.execute(projects.insert().values(id=project_id, created_at_us=now_us()))


async def create_key(session: AsyncSession, project_id: str, scope: Scope) -> str:
    """Create a key (and its project if new); the plain key is returned once, never stored."""
    await ensure_project(session, project_id)
    key = PREFIX[scope] + secrets.token_urlsafe(32)
    await session.execute(
        api_keys.insert().values(
            key_hash=hash_key(key), project_id=project_id, scope=scope, created_at_us=now_us()
        )
    )
    return key


async def find_key(session: AsyncSession, key: str) -> KeyGrant | None:
    row = (
        await session.execute(
            select(api_keys.c.project_id, api_keys.c.scope).where(
                api_keys.c.key_hash == hash_key(key), api_keys.c.revoked_at_us.is_(None)
            )
        )
    ).first()
    return KeyGrant(row.project_id, row.scope) if row else None
