"""Write-key lookup for ingest, cached so that a request rarely touches the database.

While the database is unavailable, events are still accepted (Kafka holds them): a key's
last answer from the database keeps serving past its cache time until a lookup succeeds
again; only a key never looked up cannot be answered (:class:`KeysUnavailable`).
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import is_unavailable
from shared.keys import KeyGrant
from shared.repository.keys import find_key

log = logging.getLogger(__name__)


class KeysUnavailable(Exception):
    """The key is not known here and the database cannot be asked now: retry later."""


class KeyStore(Protocol):
    async def project_for(self, key: str) -> str | None:
        """The project a write key belongs to, or ``None`` when it is unknown or revoked.

        Raises :class:`KeysUnavailable` when that cannot be told now.
        """
        ...


class DatabaseKeyStore:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cache_s: float,
        capacity: int = 10_000,
    ) -> None:
        self._sessions = sessions
        self._cache_s = cache_s
        self._capacity = capacity
        self._cache: dict[str, tuple[float, KeyGrant | None]] = {}
        self._unavailable = False  # logged once per outage, not once per request

    async def project_for(self, key: str) -> str | None:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is None or hit[0] < now:
            try:
                async with self._sessions() as session:
                    grant = await find_key(session, key)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                self._went_away(exc)
                if hit is None:
                    raise KeysUnavailable(str(exc)) from exc
                grant = hit[1]  # kept, and asked again on the next request
            else:
                if self._unavailable:
                    self._unavailable = False
                    log.info("key lookups answered again")
                self._remember(key, (now + self._cache_s, grant))
        else:
            grant = hit[1]
        return grant.project_id if grant and grant.scope == "write" else None

    def _went_away(self, exc: Exception) -> None:
        if not self._unavailable:
            self._unavailable = True
            log.warning("key lookups fail (%s); known keys keep their last answer", exc)

    def _remember(self, key: str, entry: tuple[float, KeyGrant | None]) -> None:
        if key not in self._cache and len(self._cache) >= self._capacity:
            # Unknown keys first: a flood of made-up keys must not push out the real ones,
            # which are what keeps ingest accepting while the database is away.
            for known in [k for k, (_, grant) in self._cache.items() if grant is None]:
                del self._cache[known]
            if len(self._cache) >= self._capacity:
                self._cache.clear()
        self._cache[key] = entry
