"""The oracle's entries: every rule of the README's funnel semantics, spelled out by brute
force. Obviously correct rather than fast; shares no code with the engine (only the data
types and the condition matcher, tested on its own).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby

from services.aggregator.engine import PersonEvent
from shared.funnel import Condition, FunnelDefinition, Matcher, lookup, text_or_none


@dataclass(frozen=True)
class Path:
    """One entry. Ordered and strict: ``events[k]`` did step k+1 (``None``: an optional step
    skipped). Any order: the events that did its distinct steps, in time order."""

    t0: int
    events: tuple[PersonEvent | None, ...]
    disqualified: bool

    @property
    def reached(self) -> int:
        return len(self.events)

    def time(self, k: int) -> int | None:
        """When 0-based step k was done (any order: when k+1 distinct steps were)."""
        e = self.events[k] if k < len(self.events) else None
        return None if e is None else e.ts

    def did(self, k: int) -> bool:
        return self.time(k) is not None

    def value(self, k: int, prop: str) -> str | None:
        e = self.events[k]
        return None if e is None else text_or_none(lookup(prop, e.properties, e.context))


def matches(m: Matcher, e: PersonEvent) -> bool:
    return m.matches(e.name, e.properties, e.context)


def step_set(f: FunnelDefinition, e: PersonEvent) -> set[int]:
    return {k for k, s in enumerate(f.steps) if matches(s.matcher, e)}


def prepare(
    f: FunnelDefinition, events: Iterable[PersonEvent], filters: Sequence[Condition] = ()
) -> list[PersonEvent]:
    """Dedup by event id; drop events failing a global filter; canonical order: time, then
    the lowest step matched (events matching none last), then event id."""
    unique: dict[str, PersonEvent] = {}
    for e in events:
        unique.setdefault(e.event_id, e)
    kept = [
        e
        for e in unique.values()
        if all(c.matches(e.properties, e.context) for c in (*f.filters, *filters))
    ]
    return sorted(kept, key=lambda e: (e.ts, min(step_set(f, e), default=99), e.event_id))


def instants(events: list[PersonEvent]) -> list[list[PersonEvent]]:
    return [list(g) for _, g in groupby(events, key=lambda e: e.ts)]


def paths(f: FunnelDefinition, events: list[PersonEvent]) -> list[Path]:
    """Every entry of a person whose events are ``prepare``d."""
    if f.order == "any":
        found = (_any_path(f, events, group[0].ts) for group in instants(events))
        return [p for p in found if p is not None]
    return [
        _ordered_path(f, events, group[0].ts)
        for group in instants(events)
        if any(0 in step_set(f, e) for e in group)
    ]


def _ordered_path(f: FunnelDefinition, events: list[PersonEvent], t0: int) -> Path:
    done: list[PersonEvent | None] = []
    for group in instants([e for e in events if t0 <= e.ts <= t0 + f.window_us]):
        if len(done) == len(f.steps):
            break
        moves = _best_moves(f, len(done), group)
        if not moves and f.order == "strict" and group[0].ts > t0:
            break  # the next event (of any name) did not take the entry further
        for step, e in moves:
            done += [None] * (step - len(done))
            done.append(e)
    return Path(t0, tuple(done), _disqualified(f, events, t0, done))


def _best_moves(
    f: FunnelDefinition, pos: int, group: list[PersonEvent]
) -> list[tuple[int, PersonEvent]]:
    """Of all ways the instant's events can take steps from ``pos`` (each event one step,
    steps in order, required steps never skipped): the furthest, then the one doing most
    steps, then the lowest steps, then the events first in canonical order."""
    options: list[list[tuple[int, int]]] = []

    def walk(p: int, used: list[tuple[int, int]]) -> None:
        options.append(used)
        for step in range(p, len(f.steps)):
            for i, e in enumerate(group):
                taken = any(i == j for _, j in used)
                if not taken and matches(f.steps[step].matcher, e):
                    walk(step + 1, [*used, (step, i)])
            if not f.steps[step].optional:
                break  # a required step cannot be skipped

    walk(pos, [])
    best = min(
        options,
        key=lambda o: (
            -(o[-1][0] if o else -1),
            -len(o),
            [s for s, _ in o],
            [i for _, i in o],
        ),
    )
    return [(step, group[i]) for step, i in best]


def _disqualified(
    f: FunnelDefinition, events: list[PersonEvent], t0: int, done: list[PersonEvent | None]
) -> bool:
    """An exclusion event after the entry first stood at step ``from_step`` or beyond and
    before it first stood at ``to_step`` or beyond (else up to its window's end, inclusive),
    at no instant of one of its steps."""
    times = [None if e is None else e.ts for e in done]
    instants_of_steps = {t for t in times if t is not None}

    def stood_at(step: int) -> int | None:
        later = [t for t in times[step - 1 :] if t is not None]
        return later[0] if later else None

    for x in f.exclusions:
        low, high = stood_at(x.from_step), stood_at(x.to_step)
        if low is None:
            continue
        for e in events:
            inside = low < e.ts < high if high is not None else low < e.ts <= t0 + f.window_us
            if inside and e.ts not in instants_of_steps and matches(x.matcher, e):
                return True
    return False


def distinct_steps(f: FunnelDefinition, events: list[PersonEvent]) -> int:
    """The most distinct steps these events can do, each event at most one."""

    def best(i: int, taken: frozenset[int]) -> int:
        if i == len(events):
            return 0
        found = best(i + 1, taken)
        for k in step_set(f, events[i]) - taken:
            found = max(found, 1 + best(i + 1, taken | {k}))
        return found

    return best(0, frozenset())


def _any_path(f: FunnelDefinition, events: list[PersonEvent], t0: int) -> Path | None:
    """The entry starting at t0: in time (canonical) order, an event joins it when it makes
    the distinct steps done grow. An exclusion at an instant where the entry did no step,
    while it has done at least from_step and fewer than to_step steps, throws it away."""
    used: list[PersonEvent] = []
    for group in instants([e for e in events if t0 <= e.ts <= t0 + f.window_us]):
        before = len(used)
        for e in group:
            if len(used) < len(f.steps) and distinct_steps(f, [*used, e]) > len(used):
                used.append(e)
        if not used:
            return None  # no step event at t0: no entry starts here
        excluded = any(
            x.from_step <= before < x.to_step and matches(x.matcher, e)
            for x in f.exclusions
            for e in group
        )
        if len(used) == before and excluded:
            return None
        if len(used) == len(f.steps):
            break
    return Path(t0, tuple(used), False)
