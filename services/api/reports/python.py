"""Funnel reports computed from stored entries: pure functions, no I/O.

Counting (BRIEF section 2): with ``uniques`` a person counts once, at the furthest step reached
by any of their entries in the range, along the path of the furthest-reaching clean entry (on a
tie ``shared.funnel.counted_key``); a person whose furthest entry is disqualified, with no clean
entry as far, is not counted. With ``totals`` every clean entry counts.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from shared.funnel import US, CountMode, Entry, FunnelDefinition, Touch, counted_key, value_number

Attribution = Literal["first_touch", "last_touch", "step"]
OTHER = "(other)"


@dataclass(frozen=True, slots=True)
class Breakdown:
    property: str
    attribution: Attribution = "first_touch"
    step: int = 1  # 1-based, used with attribution "step"
    limit: int = 10


@dataclass(frozen=True, slots=True)
class Window:
    """The entries' range [start, end) and the instant the report is made, all in µs."""

    start: int
    end: int
    now: int


@dataclass(frozen=True, slots=True)
class Timing:
    median_s: float
    p90_s: float
    mean_s: float


@dataclass(frozen=True, slots=True)
class StepReport:
    step: int
    name: str
    persons: int
    conversion_from_previous: float | None
    conversion_from_start: float | None
    dropped: int
    in_progress: int
    drop_off_rate: float | None
    time_from_previous: Timing | None
    value_sum: float | None
    value_average: float | None


@dataclass(frozen=True, slots=True)
class GroupReport:
    value: str | None
    steps: tuple[StepReport, ...]


@dataclass(frozen=True, slots=True)
class FunnelReport:
    steps: tuple[StepReport, ...]
    groups: tuple[GroupReport, ...] = ()


Counted = tuple[str, Entry]


def counted_entries(
    entries_by_person: Mapping[str, Sequence[Entry]], count: CountMode
) -> list[Counted]:
    """The entries a report counts: one per person (uniques) or every clean entry (totals)."""
    counted: list[Counted] = []
    for person, entries in entries_by_person.items():
        clean = [e for e in entries if not e.disqualified]
        if count == "totals":
            counted.extend((person, e) for e in clean)
            continue
        if not clean:
            continue
        best = min(clean, key=counted_key)
        if best.reached >= max(e.reached for e in entries):
            counted.append((person, best))
    return counted


@dataclass(frozen=True, slots=True)
class Tally:
    """What a group's step reports are made from, however it was computed.

    Per step k (0-based): ``stopped[k]`` entries got exactly k+1 steps far, ``open[k]`` of them
    still have their window open, ``timings[k]`` is the time from step k to step k+1 (``None``
    for the first step or when nobody got there) and ``values[k]`` the (sum, average) of the
    value property over entries that reached step k+1, if any was a number.
    """

    stopped: Sequence[int]
    open: Sequence[int]
    timings: Sequence[Timing | None]
    values: Sequence[tuple[float, float] | None]


def step_reports(
    definition: FunnelDefinition, counted: Sequence[Counted], now: int
) -> tuple[StepReport, ...]:
    n = len(definition.steps)
    stopped = [0] * n
    open_ = [0] * n
    window = definition.window_us
    for _, entry in counted:
        got = len(entry.step_times)
        stopped[got - 1] += 1
        if got < n and now < entry.t0 + window:
            open_[got - 1] += 1
    timings = [_timing(counted, k) if k else None for k in range(n)]
    values = []
    for k in range(n):
        found = _step_values(definition, counted, k)
        values.append((sum(found), statistics.fmean(found)) if found else None)
    return steps_from_tally(definition, Tally(stopped, open_, timings, values))


def steps_from_tally(definition: FunnelDefinition, tally: Tally) -> tuple[StepReport, ...]:
    n = len(definition.steps)
    reached = [sum(tally.stopped[k:]) for k in range(n)]
    reports = []
    for k, step in enumerate(definition.steps):
        in_progress = tally.open[k] if k + 1 < n else 0
        dropped = (tally.stopped[k] if k + 1 < n else 0) - in_progress
        value = tally.values[k]
        reports.append(
            StepReport(
                step=k + 1,
                name=step.name,
                persons=reached[k],
                conversion_from_previous=_ratio(reached[k], reached[k - 1 if k else 0]),
                conversion_from_start=_ratio(reached[k], reached[0]),
                dropped=dropped,
                in_progress=in_progress,
                drop_off_rate=_ratio(dropped, reached[k]) if k + 1 < n else None,
                time_from_previous=tally.timings[k] if k else None,
                value_sum=value[0] if value else None,
                value_average=value[1] if value else None,
            )
        )
    return tuple(reports)


def funnel_report(
    definition: FunnelDefinition,
    entries_by_person: Mapping[str, Sequence[Entry]],
    window: Window,
    count: CountMode = "uniques",
    breakdown: Breakdown | None = None,
    touches_by_person: Mapping[str, Sequence[Touch]] | None = None,
) -> FunnelReport:
    counted = counted_entries(entries_by_person, count)
    steps = step_reports(definition, counted, window.now)
    if breakdown is None:
        return FunnelReport(steps)
    groups: dict[str | None, list[Counted]] = defaultdict(list)
    for person, entry in counted:
        touches = (touches_by_person or {}).get(person, ())
        groups[attribute(breakdown, entry, touches, window)].append((person, entry))
    return FunnelReport(steps, _grouped(definition, groups, breakdown.limit, window.now))


def attribute(
    breakdown: Breakdown, entry: Entry, touches: Sequence[Touch], window: Window
) -> str | None:
    """The breakdown value a counted entry is grouped under (``None``: missing)."""
    if breakdown.attribution == "step":
        return _at(entry.step_values.get(breakdown.property, ()), breakdown.step - 1)
    in_range = sorted(
        (t.ts, t.seq, t.values.get(breakdown.property))
        for t in touches
        if window.start <= t.ts < window.end and t.values.get(breakdown.property) is not None
    )
    if not in_range:
        return None
    return in_range[0][2] if breakdown.attribution == "first_touch" else in_range[-1][2]


def _grouped(
    definition: FunnelDefinition,
    groups: Mapping[str | None, list[Counted]],
    limit: int,
    now: int,
) -> tuple[GroupReport, ...]:
    persons = {key: len({p for p, _ in members}) for key, members in groups.items()}

    def size(key: str | None) -> tuple[int, str]:
        return (-persons[key], "" if key is None else key)

    named = sorted((k for k in groups if k is not None), key=size)
    top, rest = named[:limit], named[limit:]
    result = [GroupReport(k, step_reports(definition, groups[k], now)) for k in top]
    if rest:
        merged = [c for k in rest for c in groups[k]]
        result.append(GroupReport(OTHER, step_reports(definition, merged, now)))
    if None in groups:
        result.append(GroupReport(None, step_reports(definition, groups[None], now)))
    return tuple(result)


def _step_values(definition: FunnelDefinition, counted: Sequence[Counted], k: int) -> list[float]:
    prop = definition.value_property
    if prop is None:
        return []
    numbers = (_at(e.step_values.get(prop, ()), k) for _, e in counted if e.reached > k)
    return [x for x in map(value_number, numbers) if x is not None]


def _at(values: Sequence[str | None], k: int) -> str | None:
    return values[k] if k < len(values) else None


def _timing(counted: Sequence[Counted], k: int) -> Timing | None:
    found = (e.from_previous_us(k + 1) for _, e in counted)
    durations = [d / US for d in found if d is not None]
    if not durations:
        return None
    p90 = (
        statistics.quantiles(durations, n=10, method="inclusive")[8]
        if len(durations) > 1
        else durations[0]
    )
    return Timing(statistics.median(durations), p90, statistics.fmean(durations))


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None
