"""Which events of a person take which steps of an entry: the funnel engine's inner loops.

Pure (standard library only) and index-based: a person's events come in their canonical
order (time, then the lowest step matched, then event id) as ``steps[j]``, the 0-based steps
event j matches, with ``instants`` the index ranges of equal times. Every function returns a
*path*: per step of the entry the index of the event that did it (-1: an optional step
skipped), or in ``any`` order the events that did the entry's distinct steps, in time order.

Same-instant events have no order among themselves, so they are assigned to steps to get
as far as possible (see ``extension``); when several could take a step, the first in the
canonical order takes it. This is what makes every permutation of such events equal.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Steps = Sequence[frozenset[int]]
Voids = Callable[[int, int], bool]


@dataclass(frozen=True, slots=True)
class Shape:
    """What the loops need of a definition: step count, optional steps, window (µs), and
    per position p (steps done or skipped so far) ``reach[p]``, the highest step a single
    event may take next: the next required one (optional ones before it may be skipped)."""

    n: int
    optional: tuple[bool, ...]
    window_us: int
    strict: bool
    reach: tuple[int, ...]

    @classmethod
    def of(cls, optional: Sequence[bool], window_us: int, strict: bool) -> Shape:
        n, reach = len(optional), []
        for p in range(n + 1):
            q = p
            while q < n - 1 and optional[q]:
                q += 1
            reach.append(q)
        return cls(n, tuple(optional), window_us, strict, tuple(reach))


@dataclass(frozen=True, slots=True)
class Stream:
    """A person's events as the loops see them, in canonical order: their times, the steps
    each matches, and the index ranges of events with equal times."""

    ts: Sequence[int]
    steps: Steps
    instants: Sequence[tuple[int, int]]


def plain_path(shape: Shape, stream: Stream, first: int) -> list[int]:
    """``ordered_path`` when no two events share an instant and no step is optional: each
    step taken by the first event after the previous one that matches it."""
    ts, steps = stream.ts, stream.steps
    path = [first]
    deadline, n = ts[first] + shape.window_us, shape.n
    for j in range(first + 1, len(ts)):
        if ts[j] > deadline or len(path) == n:
            break
        if len(path) in steps[j]:
            path.append(j)
        elif shape.strict:
            break
    return path


def ordered_path(shape: Shape, stream: Stream, first: int) -> list[int]:
    """The entry opened at instant ``first``: at each instant of its window it goes as far
    as that instant's events take it; in strict order an instant that takes it nowhere ends
    it (events of an instant where it does take a step never do)."""
    ts, steps, instants, reach = stream.ts, stream.steps, stream.instants, shape.reach
    path: list[int] = []
    deadline = ts[instants[first][0]] + shape.window_us
    simple = not any(shape.optional)
    for i in range(first, len(instants)):
        a, b = instants[i]
        if ts[a] > deadline:
            break
        pos = len(path)
        if b - a == 1:
            s = pos if simple else _single(steps[a], pos, reach[pos])
            if s >= 0 and s in steps[a]:
                path.extend([-1] * (s - pos))
                path.append(a)
            elif shape.strict and i > first:
                break
        else:
            one_each = simple and all(len(steps[j]) < 2 for j in range(a, b))
            taken = (
                _chain(steps, a, b, pos, shape.n)
                if one_each
                else extension(shape, steps, range(a, b), pos)
            )
            if taken:
                for s, j in taken:
                    path.extend([-1] * (s - len(path)))
                    path.append(j)
            elif shape.strict and i > first:
                break
        if len(path) == shape.n:
            break
    return path


def _chain(steps: Steps, a: int, b: int, pos: int, n: int) -> list[tuple[int, int]]:
    """``extension`` when no step is optional and each event matches one step at most:
    steps pos, pos + 1, ... as long as each has an event, the first such event taking it."""
    taken = []
    free = list(range(a, b))
    while pos < n:
        j = next((j for j in free if pos in steps[j]), -1)
        if j < 0:
            break
        taken.append((pos, j))
        free.remove(j)
        pos += 1
    return taken


def _single(matched: frozenset[int], pos: int, highest: int) -> int:
    """The furthest step one event can take from ``pos``, or -1."""
    best = -1
    for s in matched:
        if pos <= s <= highest and s > best:
            best = s
    return best


def extension(shape: Shape, steps: Steps, events: range, pos: int) -> list[tuple[int, int]]:
    """The steps same-instant ``events`` do from position ``pos``, as (step, event) pairs.

    Furthest step first; then as many optional steps before it as possible (the lowest ones
    when not all fit); then, step by step, the first event that still lets the others be
    assigned. Required steps are never skipped; each event does at most one step.
    """
    options = {j: frozenset(s for s in steps[j] if s >= pos) for j in events}
    options = {j: m for j, m in options.items() if m}
    for goal in sorted({s for m in options.values() for s in m}, reverse=True):
        chosen = [s for s in range(pos, goal) if not shape.optional[s]] + [goal]
        if len(chosen) > len(options) or not matchable(chosen, options):
            continue
        for s in range(pos, goal):
            if shape.optional[s] and matchable([*chosen, s], options):
                chosen.append(s)
        return _assign(sorted(chosen), options)
    return []


def _assign(chosen: list[int], options: dict[int, frozenset[int]]) -> list[tuple[int, int]]:
    free = dict(options)
    taken = []
    for k, s in enumerate(chosen):
        for j in sorted(free):
            if s not in free[j]:
                continue
            rest = {i: m for i, m in free.items() if i != j}
            if matchable(chosen[k + 1 :], rest):
                taken.append((s, j))
                free = rest
                break
    return taken


def matchable(wanted: Sequence[int], options: dict[int, frozenset[int]]) -> bool:
    """Whether every wanted step can get its own event (Kuhn's augmenting paths)."""
    owner: dict[int, int] = {}  # event -> step
    by_step = {s: [j for j in sorted(options) if s in options[j]] for s in wanted}

    def place(s: int, seen: set[int]) -> bool:
        for j in by_step[s]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or place(owner[j], seen):
                owner[j] = s
                return True
        return False

    return all(place(s, set()) for s in wanted)


def any_paths(
    shape: Shape, stream: Stream, excluded: Sequence[int], voids: Voids
) -> list[tuple[int, list[int]]]:
    """``any`` order: an entry per instant with a step event; the events it uses are the
    earliest set doing the most distinct steps in its window (greedy in canonical order,
    one event one step). ``voids(t, done)`` says whether an exclusion at instant t (one of
    the sorted ``excluded``) throws away an entry that has done ``done`` steps and did none
    at t; such entries are left out.
    """
    steps = stream.steps
    if all(len(m) < 2 for m in steps):
        return _any_paths_one_each(shape, stream, excluded, voids)
    found = []
    for first, (a, b) in enumerate(stream.instants):
        if not any(steps[j] for j in range(a, b)):
            continue
        path = _any_path(shape, stream, first, voids)
        if path is not None:
            found.append((first, path))
    return found


def _any_paths_one_each(
    shape: Shape, stream: Stream, excluded: Sequence[int], voids: Voids
) -> list[tuple[int, list[int]]]:
    """``any_paths`` when each event matches one step at most: an entry's events are then
    the first of each step in its window. From the last instant back, keeping those."""
    ts, steps, instants = stream.ts, stream.steps, stream.instants
    first_of: dict[int, int] = {}  # step -> its first event from the current instant on
    found = []
    for i in range(len(instants) - 1, -1, -1):
        a, b = instants[i]
        for j in range(b - 1, a - 1, -1):
            for s in steps[j]:
                first_of[s] = j
        if not any(steps[j] for j in range(a, b)):
            continue
        deadline = ts[a] + shape.window_us
        path = sorted(j for j in first_of.values() if ts[j] <= deadline)
        if not _voided(shape, ts, path, excluded, voids):
            found.append((i, path))
    found.reverse()
    return found


def _voided(
    shape: Shape, ts: Sequence[int], path: list[int], excluded: Sequence[int], voids: Voids
) -> bool:
    """Whether an exclusion instant within the window throws the entry away (see any_paths)."""
    if not excluded:
        return False
    t0 = ts[path[0]]
    times = [ts[j] for j in path]
    end = times[-1] if len(path) == shape.n else t0 + shape.window_us
    for t in excluded[bisect_right(excluded, t0) : bisect_right(excluded, end)]:
        done = bisect_left(times, t)
        if not (done < len(times) and times[done] == t) and voids(t, done):
            return True
    return False


def _any_path(shape: Shape, stream: Stream, first: int, voids: Voids) -> list[int] | None:
    ts, steps, instants = stream.ts, stream.steps, stream.instants
    deadline = ts[instants[first][0]] + shape.window_us
    owner: dict[int, int] = {}  # step -> event
    used: list[int] = []
    for i in range(first, len(instants)):
        a, b = instants[i]
        if ts[a] > deadline:
            break
        before = len(used)
        for j in range(a, b):
            if steps[j] and _augment(j, steps, owner, set()):
                used.append(j)
                if len(used) == shape.n:
                    return used
        if len(used) == before and voids(ts[a], before):
            return None
    return used


def _augment(j: int, steps: Steps, owner: dict[int, int], seen: set[int]) -> bool:
    for s in steps[j]:
        if s in seen:
            continue
        seen.add(s)
        if s not in owner or _augment(owner[s], steps, owner, seen):
            owner[s] = j
            return True
    return False
