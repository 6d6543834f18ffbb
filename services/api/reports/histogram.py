"""Time to convert from one step to a later one: its distribution over a report's counted
entries, in bins chosen from the data as PostHog chooses them, or given. Pure."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from services.api.reports.python import Counted
from shared.funnel import US

MAX_BINS = 90  # bins asked for by number
AUTO_MAX_BINS = 60  # bins chosen from the data
EMPTY_WIDTH_S = 60  # the width when every sample is the same


@dataclass(frozen=True, slots=True)
class Bin:
    start_s: float
    end_s: float
    units: int


@dataclass(frozen=True, slots=True)
class Histogram:
    bins: tuple[Bin, ...]
    conversions: int  # counted entries that did both steps
    mean_s: float | None
    median_s: float | None


def samples_s(counted: Sequence[Counted], from_step: int, to_step: int) -> list[float]:
    """Seconds from ``from_step`` to ``to_step`` (1-based) of the entries that did both."""
    found = []
    for _, entry in counted:
        if entry.done(from_step) and entry.done(to_step):
            a, b = entry.step_times[from_step - 1], entry.step_times[to_step - 1]
            found.append(((b or 0) - (a or 0)) / US)
    return found


def histogram(samples: Sequence[float], bins: int | Sequence[float] | None = None) -> Histogram:
    """``bins``: None, ``clamp(ceil(cbrt(n)), 1, 60)`` bins from the data; a number, that
    many; else the edges (ascending; each bin [a, b), the last one [a, b]; samples outside
    are in none). Bins from the data start at the floor of the least sample and are
    ``ceil((max - min) / bins)`` seconds wide (60 when that is 0), one more than asked, so
    that the greatest sample has a bin (as PostHog)."""
    mean = statistics.fmean(samples) if samples else None
    median = statistics.median(samples) if samples else None
    if isinstance(bins, Sequence):
        edges = list(bins)
        last = len(edges) - 2
        found = tuple(
            Bin(lo, hi, sum(1 for v in samples if lo <= v < hi or (i == last and v == hi)))
            for i, (lo, hi) in enumerate(itertools.pairwise(edges))
        )
        return Histogram(found, len(samples), mean, median)
    if not samples:
        return Histogram((), 0, None, None)
    # Rounded first: 27 ** (1 / 3) is 3.0000000000000004.
    auto = min(max(math.ceil(round(len(samples) ** (1 / 3), 9)), 1), AUTO_MAX_BINS)
    n = auto if bins is None else min(max(bins, 1), MAX_BINS)
    lo, hi = math.floor(min(samples)), math.ceil(max(samples))
    width = math.ceil((hi - lo) / n) or EMPTY_WIDTH_S
    counts = [0] * (n + 1)
    for v in samples:
        counts[math.floor((v - lo) / width)] += 1
    found = tuple(
        Bin(float(lo + i * width), float(lo + (i + 1) * width), counts[i]) for i in range(n + 1)
    )
    return Histogram(found, len(samples), mean, median)
