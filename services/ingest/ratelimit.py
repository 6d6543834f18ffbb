"""Token buckets per write key: a burst of one second's worth, refilled continuously."""

from __future__ import annotations

import time


class RateLimiter:
    def __init__(self, per_second: float) -> None:
        self._rate = per_second
        self._buckets: dict[str, tuple[float, float]] = {}

    def retry_after(self, key: str, cost: int) -> float:
        """0 when ``cost`` events may pass now (and takes them), else seconds to wait."""
        if self._rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, since = self._buckets.get(key, (self._rate, now))
        tokens = min(self._rate, tokens + (now - since) * self._rate)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            return max((cost - tokens) / self._rate, 0.001)
        self._buckets[key] = (tokens - cost, now)
        return 0.0
