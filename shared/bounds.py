"""Where each of a person's entries is the counted one, and each touch the first or last.

Pure (standard library and ``shared.funnel`` only). A report over the entries started in
``[lo, hi)`` counts a person once, by their counted entry (``shared.funnel.counted_entry``
over the entries in range), and attributes a first-touch breakdown to the first touch in
range. Both choices depend on the range, so a report that makes them per person costs a sort
per person. Stored with each entry and touch, the bounds below turn them into range filters:

- entry ``e`` is the person's counted entry in ``[lo, hi)`` exactly when
  ``lo <= e.t0 < hi and left < lo and right >= hi`` (``None``: no bound on that side);
- touch ``t`` is the first touch in range with a value of the property exactly when
  ``lo <= t.ts < hi and (previous is None or previous < lo)``, and the last exactly when
  ``lo <= t.ts < hi and (next is None or next >= hi)``.

``left`` is the start of the nearest entry at or before ``e`` (by start) that keeps ``e``
from being counted when both are in range, ``right`` the start of the nearest one after: a
clean entry that comes first in ``counted_key`` order, or a disqualified entry that got
further (a person whose furthest entry is disqualified is not counted). A disqualified entry
is never counted: its ``left`` is its own start. The order is ``counted_key``'s, whatever it
says; starts must be distinct per person (the engine opens one entry per instant).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from shared.funnel import Entry, Touch, counted_key


@dataclass(frozen=True, slots=True)
class EntryBounds:
    """``[left, right)`` as above; ``None`` means unbounded on that side."""

    left: int | None
    right: int | None

    def counted_in(self, t0: int, lo: int, hi: int) -> bool:
        return (
            lo <= t0 < hi
            and (self.left is None or self.left < lo)
            and (self.right is None or self.right >= hi)
        )


@dataclass(frozen=True, slots=True)
class TouchBounds:
    """A touch with a value of the property, and the instants of the person's touches with
    a value just before and just after it (``None``: none)."""

    touch: Touch
    previous: int | None
    next: int | None

    def first_in(self, lo: int, hi: int) -> bool:
        return lo <= self.touch.ts < hi and (self.previous is None or self.previous < lo)

    def last_in(self, lo: int, hi: int) -> bool:
        return lo <= self.touch.ts < hi and (self.next is None or self.next >= hi)


def entry_bounds(entries: Sequence[Entry]) -> list[EntryBounds]:
    """The bounds of each of one person's entries (in one funnel), in the given order."""
    if len(entries) == 1:  # the common first-time person: counted in every range it starts in
        e = entries[0]
        return [EntryBounds(e.t0 if e.disqualified else None, None)]
    order = sorted(range(len(entries)), key=lambda i: entries[i].t0)
    if any(entries[a].t0 == entries[b].t0 for a, b in pairwise(order)):
        raise ValueError("a person's entries must start at distinct instants")
    left = _nearest_beaters(entries, order)
    right = _nearest_beaters(entries, order[::-1])
    found = []
    for i, e in enumerate(entries):
        if e.disqualified:
            found.append(EntryBounds(e.t0, None))
            continue
        found.append(EntryBounds(_pick(left[i], max), _pick(right[i], min)))
    return found


def touch_bounds(touches: Sequence[Touch], prop: str) -> list[TouchBounds]:
    """One person's touches with a value of ``prop``, in (time, seq) order, each with the
    instants of its neighbours among them."""
    valued = sorted((t for t in touches if t.values.get(prop) is not None), key=_touch_order)
    times = [t.ts for t in valued]
    return [
        TouchBounds(t, times[k - 1] if k else None, times[k + 1] if k + 1 < len(times) else None)
        for k, t in enumerate(valued)
    ]


def _touch_order(t: Touch) -> tuple[int, int]:
    return (t.ts, t.seq)


def _pick(found: tuple[int | None, int | None], choose: Callable[[list[int]], int]) -> int | None:
    """The nearer of the two beaters' starts (``max`` on the left, ``min`` on the right)."""
    known = [x for x in found if x is not None]
    return choose(known) if known else None


def _nearest_beaters(
    entries: Sequence[Entry], order: Sequence[int]
) -> dict[int, tuple[int | None, int | None]]:
    """Per clean entry, walking ``order``: the start of the nearest earlier clean entry that
    comes first by ``counted_key``, and of the nearest earlier disqualified one that got
    further (monotonic stacks: an entry passed by a nearer one at least as strong is never
    the nearest for a later entry)."""
    clean: list[tuple[Any, int]] = []  # (key, t0), keys increasing from bottom to top
    bad_reach: list[int] = []  # -reached of kept disqualified entries, increasing
    bad_t0: list[int] = []
    found: dict[int, tuple[int | None, int | None]] = {}
    for i in order:
        e = entries[i]
        if e.disqualified:
            while bad_reach and -bad_reach[-1] <= e.reached:
                bad_reach.pop()
                bad_t0.pop()
            bad_reach.append(-e.reached)
            bad_t0.append(e.t0)
            continue
        key = (counted_key(e), -e.t0)
        while clean and clean[-1][0] >= key:
            clean.pop()
        # Kept disqualified entries reach further the deeper they lie: the nearest that got
        # further than e is the last one with -reached < -e.reached.
        k = bisect_left(bad_reach, -e.reached) - 1
        found[i] = (clean[-1][1] if clean else None, bad_t0[k] if k >= 0 else None)
        clean.append((key, e.t0))
    return found


Neighbours = dict[str, list[int | None]]


def touch_neighbours(touches: Sequence[Touch]) -> list[Neighbours]:
    """Per touch, in the given order: for each property it has a value of, the instants of
    the person's touches with a value of it just before and just after (``touch_bounds``),
    as ``{property: [previous, next]}`` (what ``funnel_touches.neighbours`` stores)."""
    found: list[Neighbours] = [{} for _ in touches]
    names = sorted({k for t in touches for k, v in t.values.items() if v is not None})
    for name in names:
        valued = sorted(
            (i for i, t in enumerate(touches) if t.values.get(name) is not None),
            key=lambda i: _touch_order(touches[i]),
        )
        times = [touches[i].ts for i in valued]
        for k, i in enumerate(valued):
            after = times[k + 1] if k + 1 < len(times) else None
            found[i][name] = [times[k - 1] if k else None, after]
    return found
