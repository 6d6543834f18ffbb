"""Dead letters: records kept aside, with the reason, instead of being applied."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from shared.tables import dead_letters


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    payload: bytes | None
    reason: str


async def add_dead_letters(
    session: AsyncSession, letters: Sequence[DeadLetter], now_us: int
) -> None:
    if not letters:
        return
    await session.execute(
        dead_letters.insert(),
        [
            {
                "topic": d.topic,
                "partition": d.partition,
                "offset": d.offset,
                "key": d.key,
                "payload": d.payload,
                "reason": storable_reason(d.reason),
                "created_at_us": now_us,
            }
            for d in letters
        ],
    )


def storable_reason(reason: str) -> str:
    """A reason any database stores: quoted values may hold NUL or what UTF-8 cannot encode."""
    text = reason[:2000].replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
