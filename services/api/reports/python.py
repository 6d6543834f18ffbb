"""Funnel reports computed from stored entries: pure functions, no I/O.

Counting (BRIEF section 2): with ``uniques`` a person counts once, at the furthest step reached
by any of their entries in the range, along the path of the furthest-reaching clean entry (on a
tie ``shared.funnel.counted_key``); a person whose furthest entry is disqualified, with no clean
entry as far, is not counted. With ``totals`` every clean entry counts (in ``any`` order every
attempt, ``shared.funnel.totals_entries``). A step's count is the counted entries that did it
(``Entry.done``): an optional step counts only those who did it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from services.api.reports.significance import Comparison, compare
from shared.funnel import (
    US,
    CountMode,
    Entry,
    FunnelDefinition,
    Touch,
    counted_entry,
    totals_entries,
    value_number,
)

Attribution = Literal["first_touch", "last_touch", "step", "all_events"]
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
    comparison: Comparison | None = None


@dataclass(frozen=True, slots=True)
class FunnelReport:
    steps: tuple[StepReport, ...]
    groups: tuple[GroupReport, ...] = ()


Counted = tuple[str, Entry]


def counted_entries(
    definition: FunnelDefinition, entries_by_person: Mapping[str, Sequence[Entry]], count: CountMode
) -> list[Counted]:
    """The entries a report counts: one per person (uniques) or every clean entry (totals;
    in ``any`` order every attempt)."""
    counted: list[Counted] = []
    for person, entries in entries_by_person.items():
        if count == "totals":
            counted.extend((person, e) for e in totals_entries(definition, entries))
            continue
        best = counted_entry(entries)
        if best is not None:
            counted.append((person, best))
    return counted


@dataclass(frozen=True, slots=True)
class Tally:
    """What a group's step reports are made from, however it was computed.

    Per step k (0-based): ``done[k]`` entries did step k+1, ``stopped[k]`` got exactly k+1
    steps far, ``open[k]`` of those still have their window open, ``timings[k]`` is the time
    to step k+1 from the previous step done (``None`` for the first step or when nobody got
    there) and ``values[k]`` the (sum, average) of the value property over entries that
    reached step k+1, if any was a number.
    """

    done: Sequence[int]
    stopped: Sequence[int]
    open: Sequence[int]
    timings: Sequence[Timing | None]
    values: Sequence[tuple[float, float] | None]


def step_reports(
    definition: FunnelDefinition, counted: Sequence[Counted], now: int
) -> tuple[StepReport, ...]:
    n = len(definition.steps)
    done = [0] * n
    stopped = [0] * n
    open_ = [0] * n
    window = definition.window_us
    for _, entry in counted:
        times = entry.step_times
        got = len(times)
        for k in range(got):
            done[k] += times[k] is not None
        stopped[got - 1] += 1
        if got < n and now < entry.t0 + window:
            open_[got - 1] += 1
    timings = [_timing(counted, k) if k else None for k in range(n)]
    values = []
    for k in range(n):
        found = _step_values(definition, counted, k)
        values.append((sum(found), statistics.fmean(found)) if found else None)
    return steps_from_tally(definition, Tally(done, stopped, open_, timings, values))


def steps_from_tally(definition: FunnelDefinition, tally: Tally) -> tuple[StepReport, ...]:
    n = len(definition.steps)
    reached = list(tally.done)
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
    entries_by_value: Mapping[str | None, Mapping[str, Sequence[Entry]]] | None = None,
) -> FunnelReport:
    """The report of the range's entries. With ``attribution`` all_events the groups are made
    from ``entries_by_value`` (the entries of each value's events alone, per person)."""
    counted = counted_entries(definition, entries_by_person, count)
    steps = step_reports(definition, counted, window.now)
    if breakdown is None:
        return FunnelReport(steps)
    groups: dict[str | None, list[Counted]] = defaultdict(list)
    if breakdown.attribution == "all_events":
        for value, by_person in (entries_by_value or {}).items():
            found = counted_entries(definition, by_person, count)
            if found:
                groups[value] = found
    else:
        for person, entry in counted:
            if breakdown.attribution == "step" and not entry.done(breakdown.step):
                continue  # never did that step: in no group
            touches = (touches_by_person or {}).get(person, ())
            groups[attribute(breakdown, entry, touches, window)].append((person, entry))
    whole = _Whole(definition, counted, count)
    return FunnelReport(steps, _grouped(definition, groups, breakdown.limit, window.now, whole))


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


class _Whole:
    """The report's counted units, to compare a group with the rest of them: the units of
    persons not in the group (``uniques``), or the entries not in it (``totals``)."""

    def __init__(self, definition: FunnelDefinition, counted: Sequence[Counted], count: str):
        self._last = len(definition.steps)
        self._uniques = count == "uniques"
        self._units = {self._key(c): c[1].done(self._last) for c in counted}
        self._converted = sum(self._units.values())

    def _key(self, c: Counted) -> object:
        return c[0] if self._uniques else (c[0], c[1].t0)

    def compare(self, members: Sequence[Counted]) -> Comparison:
        x1 = sum(e.done(self._last) for _, e in members)
        keys = {self._key(c) for c in members}
        inside = [self._units[k] for k in keys if k in self._units]
        n2 = len(self._units) - len(inside)
        return compare(x1, len(members), self._converted - sum(inside), n2)


def _grouped(
    definition: FunnelDefinition,
    groups: Mapping[str | None, list[Counted]],
    limit: int,
    now: int,
    whole: _Whole,
) -> tuple[GroupReport, ...]:
    persons = {key: len({p for p, _ in members}) for key, members in groups.items()}

    def size(key: str | None) -> tuple[int, str]:
        return (-persons[key], "" if key is None else key)

    def report(value: str | None, members: list[Counted]) -> GroupReport:
        steps = step_reports(definition, members, now)
        return GroupReport(value, steps, whole.compare(members))

    named = sorted((k for k in groups if k is not None), key=size)
    top, rest = named[:limit], named[limit:]
    result = [report(k, groups[k]) for k in top]
    if rest:
        result.append(report(OTHER, [c for k in rest for c in groups[k]]))
    if None in groups:
        result.append(report(None, groups[None]))
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
