"""The aggregator's SQL, one module per kind of row; nothing else in the aggregator imports
SQLAlchemy.

Every function takes the caller's session and never commits: the caller owns the
transaction (one poll batch is one transaction). Functions that stamp rows take the instant
(``now_us``) as an argument instead of reading a clock.
"""

from typing import TypeAlias

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

Session: TypeAlias = AsyncSession  # one transaction's session, as the callers pass it
Sessions: TypeAlias = async_sessionmaker[AsyncSession]
