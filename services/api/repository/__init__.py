"""The API's SQL, one module per kind of row: funnels, stored progress, webhooks, share links
and the aggregator's freshness (projects and keys: :mod:`shared.repository.keys`).

Repositories never commit: the caller owns the transaction (a route, through the one session
of its request). They never read the clock either: instants come in as arguments. Outside
this package (and the app and its dependencies) a session is an opaque unit of work, typed
by the aliases here.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

Session = AsyncSession
Sessions = async_sessionmaker[AsyncSession]
