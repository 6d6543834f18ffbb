"""A batch recomputation of funnel reports from raw events: obviously correct, not fast.

It shares nothing with the production engine or report code except the definition data types
and the condition matcher (tested on its own). Every rule and report option of the README's
funnel semantics is spelled out here (entries in ``oracle_paths``), so that the aggregator
and the reports can be checked against it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from services.aggregator.engine import PersonEvent
from shared.funnel import Condition, FunnelDefinition, lookup, text_or_none
from tests.oracle_paths import Path, matches, paths, prepare

Unit = tuple[str, int]  # (person, entry start): what is counted (uniques: one per person)
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Timing:
    median_s: float
    p90_s: float
    mean_s: float


@dataclass(frozen=True)
class Steps:
    """Per step: units that did it, stopped there window open / closed, time from previous."""

    persons: list[int]
    in_progress: list[int]
    dropped: list[int]
    timings: list[Timing | None]


@dataclass(frozen=True)
class Comparison:
    """A group's overall conversion (last step / step 1), its 95 % Wilson interval, and the
    two-proportion z-test against the rest of the units of the whole report."""

    entered: int
    converted: int
    rate: float | None
    low: float | None
    high: float | None
    z: float | None
    p_value: float | None
    significant: bool


@dataclass(frozen=True)
class OracleReport:
    persons: list[int]
    in_progress: list[int]
    groups: dict[str | None, list[int]]
    steps: Steps | None = None
    group_steps: dict[str | None, Steps] = field(default_factory=dict)
    comparisons: dict[str | None, Comparison] = field(default_factory=dict)


def counted(
    f: FunnelDefinition,
    events_by_person: dict[str, list[PersonEvent]],
    start: int,
    end: int,
    count: str = "uniques",
    filters: Sequence[Condition] = (),
) -> dict[Unit, Path]:
    """The counted entries of entries starting in [start, end)."""
    found: dict[Unit, Path] = {}
    for person, raw in events_by_person.items():
        chosen = [p for p in paths(f, prepare(f, raw, filters)) if start <= p.t0 < end]
        for p in _counted_paths(f, chosen, count):
            found[(person, p.t0)] = p
    return found


def _counted_paths(f: FunnelDefinition, chosen: list[Path], count: str) -> list[Path]:
    clean = [p for p in chosen if not p.disqualified]
    if count == "totals":
        if f.order != "any":
            return clean
        # Any order: an entry is part of the attempt before it when that started at most a
        # window earlier and got as far.
        attempts: list[Path] = []
        for p in sorted(clean, key=lambda p: p.t0):
            if not any(
                p.t0 - f.window_us <= a.t0 < p.t0 and a.reached >= p.reached for a in attempts
            ):
                attempts.append(p)
        return attempts
    if not clean:
        return []
    furthest = max(p.reached for p in chosen)
    best = [p for p in clean if p.reached == furthest]
    if not best:
        return []  # the furthest entry is disqualified and no clean one got as far
    first_there = min(p.time(furthest - 1) or 0 for p in best)
    return [max((p for p in best if p.time(furthest - 1) == first_there), key=lambda p: p.t0)]


def tally(f: FunnelDefinition, units: dict[Unit, Path], now: int) -> Steps:
    n = len(f.steps)
    persons = [sum(1 for p in units.values() if p.did(k)) for k in range(n)]
    in_progress, dropped = [0] * n, [0] * n
    for p in units.values():
        if p.reached < n:
            still_open = now < p.t0 + f.window_us
            (in_progress if still_open else dropped)[p.reached - 1] += 1
    timings = [
        _timing([d for p in units.values() if (d := _from_previous(p, k)) is not None])
        for k in range(n)
    ]
    return Steps(persons, in_progress, dropped, timings)


def _from_previous(p: Path, k: int) -> float | None:
    """Seconds from the previous step done on the path to step k (0-based), if done."""
    t = p.time(k)
    earlier = [p.time(i) for i in range(k) if p.did(i)]
    if t is None or not earlier or k == 0:
        return None
    return (t - earlier[-1]) / 1e6


def _timing(durations: list[float]) -> Timing | None:
    if not durations:
        return None
    xs = sorted(durations)
    return Timing(_quantile(xs, 0.5), _quantile(xs, 0.9), sum(xs) / len(xs))


def _quantile(xs: list[float], q: float) -> float:
    """Linear interpolation between closest ranks."""
    h = (len(xs) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def oracle_report(
    f: FunnelDefinition,
    events_by_person: dict[str, list[PersonEvent]],
    start: int,
    end: int,
    now: int,
    count: str = "uniques",
    breakdown: str | None = None,
    attribution: str = "first_touch",
    filters: Sequence[Condition] = (),
) -> OracleReport:
    """``attribution``: first_touch, last_touch, step:K or all_events."""
    units = counted(f, events_by_person, start, end, count, filters)
    whole = tally(f, units, now)
    if breakdown is None:
        return OracleReport(whole.persons, whole.in_progress, {}, whole)
    if attribution == "all_events":
        members = _by_value(f, events_by_person, start, end, count, filters, breakdown)
    else:
        members = {}
        for unit, p in units.items():
            raw = events_by_person[unit[0]]
            for value in _attribute(f, raw, p, breakdown, attribution, start, end, filters):
                members.setdefault(value, {})[unit] = p
    group_steps = {v: tally(f, m, now) for v, m in members.items()}
    comparisons = {v: compare(f, m, units, count) for v, m in members.items()}
    groups = {v: s.persons for v, s in group_steps.items()}
    return OracleReport(whole.persons, whole.in_progress, groups, whole, group_steps, comparisons)


def _attribute(
    f: FunnelDefinition,
    raw: list[PersonEvent],
    path: Path,
    prop: str,
    attribution: str,
    start: int,
    end: int,
    filters: Sequence[Condition],
) -> list[str | None]:
    """The group a counted entry is in (none: a step attribution the path did not do)."""
    if attribution.startswith("step"):
        k = int(attribution.removeprefix("step:")) - 1
        return [path.value(k, prop)] if path.did(k) else []
    touches = [
        e
        for e in prepare(f, raw, filters)
        if start <= e.ts < end
        and any(matches(s.matcher, e) for s in f.steps)
        and text_or_none(lookup(prop, e.properties, e.context)) is not None
    ]
    if not touches:
        return [None]
    e = touches[0] if attribution == "first_touch" else touches[-1]
    return [text_or_none(lookup(prop, e.properties, e.context))]


def _by_value(
    f: FunnelDefinition,
    events_by_person: dict[str, list[PersonEvent]],
    start: int,
    end: int,
    count: str,
    filters: Sequence[Condition],
    prop: str,
) -> dict[str | None, dict[Unit, Path]]:
    """All-events attribution: the funnel over each value's events alone, per value."""
    split: dict[str | None, dict[str, list[PersonEvent]]] = {}
    for person, raw in events_by_person.items():
        for e in raw:
            value = text_or_none(lookup(prop, e.properties, e.context))
            split.setdefault(value, {}).setdefault(person, []).append(e)
    found = {v: counted(f, by_person, start, end, count, filters) for v, by_person in split.items()}
    return {v: units for v, units in found.items() if units}


def compare(
    f: FunnelDefinition, group: dict[Unit, Path], whole: dict[Unit, Path], count: str
) -> Comparison:
    """The rest: the whole report's units not in the group (uniques: of other persons)."""
    n = len(f.steps)

    def key(unit: Unit) -> Unit | str:
        return unit[0] if count == "uniques" else unit

    inside = {key(u) for u in group}
    rest = [p for unit, p in whole.items() if key(unit) not in inside]
    x1, n1 = sum(1 for p in group.values() if p.did(n - 1)), len(group)
    x2, n2 = sum(1 for p in rest if p.did(n - 1)), len(rest)
    low, high = _wilson(x1, n1)
    z = p_value = None
    pooled = (x1 + x2) / (n1 + n2) if n1 and n2 else None
    if pooled is not None and 0 < pooled < 1:
        z = (x1 / n1 - x2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        p_value = math.erfc(abs(z) / math.sqrt(2))
    rate = x1 / n1 if n1 else None
    return Comparison(n1, x1, rate, low, high, z, p_value, p_value is not None and p_value < 0.05)


def _wilson(x: int, n: int) -> tuple[float | None, float | None]:
    if not n:
        return None, None
    p, z2 = x / n, Z95 * Z95
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return center - half, center + half


def oracle_histogram(
    f: FunnelDefinition,
    events_by_person: dict[str, list[PersonEvent]],
    start: int,
    end: int,
    from_step: int = 1,
    to_step: int | None = None,
    bins: int | Sequence[float] | None = None,
    count: str = "uniques",
    filters: Sequence[Condition] = (),
) -> tuple[list[tuple[float, int]], float | None]:
    """Time to convert from step a to step b over the counted entries that did both, as
    (bin start, units) and the mean, in seconds. Bins from the data as PostHog makes them,
    or ``bins`` of them, or between the given edges (the last one closed)."""
    b = to_step or len(f.steps)
    units = counted(f, events_by_person, start, end, count, filters)
    samples = [
        ((p.time(b - 1) or 0) - (p.time(from_step - 1) or 0)) / 1e6
        for p in units.values()
        if p.did(from_step - 1) and p.did(b - 1)
    ]
    mean = sum(samples) / len(samples) if samples else None
    if isinstance(bins, Sequence):
        edges = list(bins)
        counts = [
            sum(1 for v in samples if lo <= v < hi or (i == len(edges) - 2 and v == hi))
            for i, (lo, hi) in enumerate(itertools.pairwise(edges))
        ]
        return list(zip(edges[:-1], counts, strict=True)), mean
    if not samples:
        return [], None
    n = (
        min(max(bins, 1), 90)
        if bins
        else min(max(math.ceil(round(len(samples) ** (1 / 3), 9)), 1), 60)
    )
    lo, hi = math.floor(min(samples)), math.ceil(max(samples))
    width = math.ceil((hi - lo) / n) or 60
    counts = [0] * (n + 1)
    for v in samples:
        counts[math.floor((v - lo) / width)] += 1
    return [(round(lo + i * width), counts[i]) for i in range(n + 1)], mean


def entries_of(f: FunnelDefinition, events: Iterable[PersonEvent]) -> list[Path]:
    """Every entry of one person (for comparing with the engine's)."""
    return paths(f, prepare(f, events))
