"""A batch recomputation of funnel reports from raw events: obviously correct, not fast.

It shares nothing with the production engine or report code except the definition data types
and the condition matcher (tested on its own). Every rule of BRIEF section 2 is spelled out
here step by step, so that the incremental aggregator can be checked against it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from services.aggregator.engine import PersonEvent
from shared.funnel import FunnelDefinition, Matcher, lookup, text_or_none


@dataclass(frozen=True)
class Path:
    """One entry: the events that reached steps 1..k, and whether it is disqualified."""

    events: tuple[PersonEvent, ...]
    disqualified: bool

    @property
    def t0(self) -> int:
        return self.events[0].ts

    @property
    def reached(self) -> int:
        return len(self.events)


def matches(m: Matcher, e: PersonEvent) -> bool:
    return m.matches(e.name, e.properties, e.context)


def sort_person(f: FunnelDefinition, events: Iterable[PersonEvent]) -> list[PersonEvent]:
    """Dedup by event id; order by time, then lowest matched step, then event id."""
    unique: dict[str, PersonEvent] = {}
    for e in events:
        unique.setdefault(e.event_id, e)

    def first_step(e: PersonEvent) -> float:
        for k, step in enumerate(f.steps):
            if matches(step.matcher, e):
                return k
        return math.inf

    return sorted(unique.values(), key=lambda e: (e.ts, first_step(e), e.event_id))


def paths(f: FunnelDefinition, events: list[PersonEvent]) -> list[Path]:
    found = []
    for i, opener in enumerate(events):
        if not matches(f.steps[0].matcher, opener):
            continue
        deadline = opener.ts + f.window_us
        later = [(j, e) for j, e in enumerate(events) if j > i and e.ts <= deadline]
        if f.order == "any":
            chosen = _any_order(f, opener, later)
        else:
            chosen = [opener]
            last = i
            for step in f.steps[1:]:
                nxt = [(j, e) for j, e in later if j > last]
                if f.order == "strict":
                    nxt = nxt[:1]  # only the very next event may continue the entry
                hit = next(((j, e) for j, e in nxt if matches(step.matcher, e)), None)
                if hit is None:
                    break
                last = hit[0]
                chosen.append(hit[1])
        found.append(Path(tuple(chosen), _disqualified(f, chosen, events)))
    return found


def _any_order(
    f: FunnelDefinition, opener: PersonEvent, later: list[tuple[int, PersonEvent]]
) -> list[PersonEvent]:
    chosen, done = [opener], {0}
    for _, e in later:
        if len(done) == len(f.steps):
            break
        open_steps = [k for k, s in enumerate(f.steps) if k not in done and matches(s.matcher, e)]
        if open_steps:
            done.add(open_steps[0])
            chosen.append(e)
    return chosen


def _disqualified(
    f: FunnelDefinition, chosen: list[PersonEvent], events: list[PersonEvent]
) -> bool:
    times = [e.ts for e in chosen]
    for x in f.exclusions:
        if len(times) < x.from_step:
            continue
        low = times[x.from_step - 1]
        for e in events:
            if e.ts in times or not matches(x.matcher, e) or e.ts <= low:
                continue
            if len(times) >= x.to_step:
                if e.ts < times[x.to_step - 1]:
                    return True
            elif e.ts <= times[0] + f.window_us:
                return True
    return False


@dataclass(frozen=True)
class OracleReport:
    persons: list[int]
    in_progress: list[int]
    groups: dict[str | None, list[int]]


def oracle_report(
    f: FunnelDefinition,
    events_by_person: dict[str, list[PersonEvent]],
    start: int,
    end: int,
    now: int,
    count: str = "uniques",
    breakdown: str | None = None,
    attribution: str = "first_touch",
) -> OracleReport:
    n = len(f.steps)
    counted: list[tuple[str, Path]] = []
    for person, raw in events_by_person.items():
        ordered = sort_person(f, raw)
        chosen = [p for p in paths(f, ordered) if start <= p.t0 < end]
        clean = [p for p in chosen if not p.disqualified]
        if count == "totals":
            counted += [(person, p) for p in clean]
            continue
        if not clean:
            continue
        furthest = max(p.reached for p in chosen)
        best = [p for p in clean if p.reached == furthest]
        if best:
            latest = max(best, key=lambda p: (p.t0, tuple(e.ts for e in p.events)))
            counted.append((person, latest))

    def tally(items: list[tuple[str, Path]]) -> list[int]:
        return [sum(1 for _, p in items if p.reached >= k) for k in range(1, n + 1)]

    in_progress = [0] * n
    for _, p in counted:
        if p.reached < n and now < p.t0 + f.window_us:
            in_progress[p.reached - 1] += 1
    groups: dict[str | None, list[tuple[str, Path]]] = {}
    if breakdown is not None:
        for person, p in counted:
            value = _attribute(f, events_by_person[person], p, breakdown, attribution, start, end)
            groups.setdefault(value, []).append((person, p))
    return OracleReport(tally(counted), in_progress, {k: tally(v) for k, v in groups.items()})


def _attribute(
    f: FunnelDefinition,
    raw: list[PersonEvent],
    path: Path,
    prop: str,
    attribution: str,
    start: int,
    end: int,
) -> str | None:
    if attribution.startswith("step"):
        k = int(attribution.removeprefix("step:")) - 1
        if k >= path.reached:
            return None
        e = path.events[k]
        return text_or_none(lookup(prop, e.properties, e.context))
    touches = [
        e
        for e in sort_person(f, raw)
        if start <= e.ts < end
        and any(matches(s.matcher, e) for s in f.steps)
        and text_or_none(lookup(prop, e.properties, e.context)) is not None
    ]
    if not touches:
        return None
    e = touches[0] if attribution == "first_touch" else touches[-1]
    return text_or_none(lookup(prop, e.properties, e.context))
