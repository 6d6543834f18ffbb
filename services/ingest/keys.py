"""Write-key lookup for ingest, cached so that a request rarely touches the database."""

from __future__ import annotations

import time
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.keys import KeyGrant, find_key


class KeyStore(Protocol):
    async def project_for(self, key: str) -> str | None:
        """The project a write key belongs to, or ``None`` when it is unknown or revoked."""
        ...


class DatabaseKeyStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], cache_s: float) -> None:
        self._sessions = sessions
        self._cache_s = cache_s
        self._cache: dict[str, tuple[float, KeyGrant | None]] = {}

    async def project_for(self, key: str) -> str | None:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is None or hit[0] < now:
            async with self._sessions() as session:
                grant = await find_key(session, key)
            if len(self._cache) > 10_000:
                self._cache.clear()
            hit = (now + self._cache_s, grant)
            self._cache[key] = hit
        grant = hit[1]
        return grant.project_id if grant and grant.scope == "write" else None
