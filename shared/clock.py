"""Time as the services see it: integer microseconds since the Unix epoch (UTC), and clocks.

Code that needs the time takes a :class:`Clock` (or an instant) as an argument, so tests can
fix it; only the service entry points build a :class:`SystemClock`.
"""

from __future__ import annotations

import time
from typing import Protocol

US = 1_000_000  # microseconds per second
MINUTE_US = 60 * US
HOUR_US = 3_600 * US
DAY_US = 86_400 * US


def now_us() -> int:
    """The system time in microseconds since the Unix epoch."""
    return time.time_ns() // 1000


def seconds_to_us(seconds: float) -> int:
    return round(seconds * US)


class Clock(Protocol):
    def now_us(self) -> int: ...


class SystemClock:
    def now_us(self) -> int:
        return now_us()


class FixedClock:
    """A clock that moves only when told to (tests, replays)."""

    def __init__(self, now_us: int) -> None:
        self._now = now_us

    def now_us(self) -> int:
        return self._now

    def set(self, now_us: int) -> None:
        self._now = now_us

    def advance(self, seconds: float) -> None:
        self._now += seconds_to_us(seconds)
