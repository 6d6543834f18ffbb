"""Comparing a breakdown group's conversion with the rest: a 95 % Wilson score interval and a
two-proportion z-test (pooled), significant at 5 %. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile
ALPHA = 0.05


@dataclass(frozen=True, slots=True)
class Comparison:
    """Of a group's ``entered`` units (persons, or entries with ``totals``), ``converted`` did
    the last step; ``low``/``high`` bound the rate (95 %); ``z`` and ``p_value`` test it
    against the rest of the report's units (``None`` when either side is empty or the pooled
    rate is 0 or 1, where the test says nothing)."""

    entered: int
    converted: int
    rate: float | None
    low: float | None
    high: float | None
    rest_entered: int
    rest_converted: int
    rest_rate: float | None
    z: float | None
    p_value: float | None
    significant: bool


def wilson(x: int, n: int) -> tuple[float | None, float | None]:
    """The 95 % Wilson score interval of x successes in n trials."""
    if n <= 0:
        return None, None
    p, z2 = x / n, Z95 * Z95
    scale = 1 + z2 / n
    center = (p + z2 / (2 * n)) / scale
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / scale
    return max(0.0, center - half), min(1.0, center + half)


def compare(x1: int, n1: int, x2: int, n2: int) -> Comparison:
    """Group (x1 of n1) against the rest (x2 of n2)."""
    low, high = wilson(x1, n1)
    z = p_value = None
    if n1 and n2:
        pooled = (x1 + x2) / (n1 + n2)
        if 0 < pooled < 1:
            se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
            z = (x1 / n1 - x2 / n2) / se
            p_value = math.erfc(abs(z) / math.sqrt(2))
    return Comparison(
        entered=n1,
        converted=x1,
        rate=x1 / n1 if n1 else None,
        low=low,
        high=high,
        rest_entered=n2,
        rest_converted=x2,
        rest_rate=x2 / n2 if n2 else None,
        z=z,
        p_value=p_value,
        significant=p_value is not None and p_value < ALPHA,
    )
