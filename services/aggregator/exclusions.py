"""Exclusion steps: when an exclusion event throws an entry away (see the README's semantics).

Pure (standard library only). Ordered and strict order: an entry is disqualified by an
exclusion event between the entry first standing at step a (or beyond) and first standing at
step b (or beyond; else up to its window's end), at no instant of one of its steps. Any order:
an exclusion throws away an entry's progress (see ``paths.any_paths``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services.aggregator.paths import Voids
from shared.funnel import Exclusion


class _Event(Protocol):
    @property
    def ts(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def properties(self) -> Mapping[str, Any]: ...
    @property
    def context(self) -> Mapping[str, Any]: ...


def exclusion_times(exclusions: Sequence[Exclusion], events: Iterable[_Event]) -> list[list[int]]:
    """Per exclusion, the (sorted) instants of the person's (sorted) events that match it."""
    found: list[list[int]] = [[] for _ in exclusions]
    for e in events:
        for k, x in enumerate(exclusions):
            if x.matcher.matches(e.name, e.properties, e.context):
                found[k].append(e.ts)
    return found


@dataclass(frozen=True, slots=True)
class Blocked:
    """A person's exclusion events, for the entries of ordered and strict order."""

    exclusions: Sequence[Exclusion]
    times: Sequence[Sequence[int]]  # per exclusion, as ``exclusion_times``
    window_us: int

    def disqualify(self, times: Sequence[int | None]) -> bool:
        """Whether an entry with these step times (``None``: skipped) is disqualified."""
        instants = {t for t in times if t is not None}
        end = (times[0] or 0) + self.window_us
        for x, found in zip(self.exclusions, self.times, strict=True):
            low = _passed(times, x.from_step)
            if low is None:
                continue
            high = _passed(times, x.to_step)
            stop = bisect_left(found, high) if high is not None else bisect_right(found, end)
            if any(t not in instants for t in found[bisect_right(found, low) : stop]):
                return True
        return False


def _passed(times: Sequence[int | None], step: int) -> int | None:
    """When the entry first stood at (1-based) ``step`` or beyond (``Entry.passed_at``)."""
    for t in times[step - 1 :]:
        if t is not None:
            return t
    return None


def any_order_voids(
    exclusions: Sequence[Exclusion], events: Iterable[_Event]
) -> tuple[list[int], Voids]:
    """``any`` order: the instants of exclusion events, and whether one at instant t throws
    away an entry that has done ``done`` distinct steps (from_step <= done < to_step)."""
    ranges: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for x, found in zip(exclusions, exclusion_times(exclusions, events), strict=True):
        for t in found:
            ranges[t].append((x.from_step, x.to_step))

    def voids(t: int, done: int) -> bool:
        return any(a <= done < b for a, b in ranges.get(t, ()))

    return sorted(ranges), voids
