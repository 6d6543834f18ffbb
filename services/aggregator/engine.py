"""The funnel engine: a person's events in, that person's funnel entries out.

Pure and deterministic (standard library only). The aggregator recomputes a person from all
of their stored events whenever one of them arrives, so a late, out-of-order or duplicate
event gives exactly what in-order delivery gives: there are no blind increments to undo.

Rules (README, "Funnel semantics"): a person's events are put in their canonical order
(time, then the lowest step matched, then event id). In ``ordered`` and ``strict`` order each
instant with a step-1 event opens one entry, which moves forward at each later instant of its
window (up to ``t0 + window`` inclusive) as far as that instant's events take it, one event
one step (``paths``). In ``any`` order each instant with a step event opens one. Each entry
depends only on the events of its own window.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.aggregator.exclusions import Blocked, any_order_voids, exclusion_times
from services.aggregator.paths import Shape, Stream, any_paths, ordered_path, plain_path
from shared.funnel import US, Entry, FunnelDefinition, Matcher, Touch, lookup, text_or_none

NO_STEP = 1 << 30


@dataclass(frozen=True, slots=True)
class PersonEvent:
    event_id: str
    ts: int
    name: str
    properties: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    # What evaluations derived from the event, kept for the next funnel and the next batch
    # (the aggregator keeps recent persons' events in memory). Not part of its value.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Timer:
    """One re-marketing occurrence for one entry: due at ``due_us`` unless ``cancelled``."""

    rule: str
    entry_t0: int
    occurrence: int
    due_us: int
    cancelled: bool


@dataclass(frozen=True, slots=True)
class PersonProgress:
    """Everything the reports and re-marketing need about one person in one funnel."""

    entries: tuple[Entry, ...]
    touches: tuple[Touch, ...]
    timers: tuple[Timer, ...] = ()


@dataclass(frozen=True, slots=True)
class _Ordered:
    events: tuple[PersonEvent, ...]
    steps: tuple[frozenset[int], ...]  # 0-based step indexes each event matches
    stream: Stream
    tied: bool  # whether two events share an instant


def reach_us(definition: FunnelDefinition) -> int:
    """How far back from an event's instant its arrival can change a person's progress.

    An entry depends only on the events from its start to the end of its window; a timer of
    an entry, on the goal events up to its due time, at most the window plus the rule's last
    offset after the entry started; a touch, on the events of its own instant. So entries that
    started more than this before the earliest new event keep what they had, and evaluating
    the events from that instant on gives every other entry, touch and timer exactly.
    """
    offsets = (max(rule.offsets_s()) for rule in definition.remarketing)
    return definition.window_us + max(offsets, default=0) * US


def lookback_us(definition: FunnelDefinition) -> int:
    """How far before the first entry it keeps an evaluation must read events.

    In ``any`` order with re-marketing, whether an entry gets timers depends on the entries
    that started up to one window before it (``_timers``), which depend on their own windows'
    events only; otherwise an entry depends on nothing before its start.
    """
    return definition.window_us if definition.order == "any" and definition.remarketing else 0


def evaluate(definition: FunnelDefinition, events: Iterable[PersonEvent]) -> PersonProgress:
    return Evaluator(definition)(events)


def evaluate_by_value(
    definition: FunnelDefinition,
    events: Iterable[PersonEvent],
    prop: str,
    evaluator: Evaluator | None = None,
) -> dict[str | None, PersonProgress]:
    """All-events attribution: the person's progress over only the events whose ``prop`` has
    each value (``None``: missing), per value. Steps, exclusions and strict interruptions
    alike see only that value's events. ``evaluator``: one of ``definition``, to reuse."""
    by_value: dict[str | None, list[PersonEvent]] = defaultdict(list)
    for e in events:
        by_value[text_or_none(lookup(prop, e.properties, e.context))].append(e)
    if evaluator is None:
        evaluator = Evaluator(definition)
    return {value: evaluator(found) for value, found in by_value.items()}


class Evaluator:
    """A funnel definition prepared for evaluating many persons: each event is tested only
    against the steps that name its event (or name none)."""

    def __init__(self, definition: FunnelDefinition) -> None:
        self.definition = definition
        unnamed: list[tuple[int, Matcher]] = []
        named: dict[str, list[tuple[int, Matcher]]] = {}
        for k, step in enumerate(definition.steps):
            m = step.matcher
            (unnamed if m.event is None else named.setdefault(m.event, [])).append((k, m))
        self._candidates = {name: tuple(sorted(found + unnamed)) for name, found in named.items()}
        self._unnamed = tuple(unnamed)
        # Steps matched by name alone (no step among the candidates has conditions).
        self._fixed = {
            name: frozenset(k for k, _ in found)
            for name, found in [*self._candidates.items(), (None, self._unnamed)]
            if not any(m.conditions for _, m in found)
        }
        self._exclusions = definition.exclusions
        self._filters = definition.filters
        self._tracked = definition.tracked_properties  # the breakdowns among them
        self._shape = Shape.of(
            [s.optional for s in definition.steps],
            definition.window_us,
            definition.order == "strict",
        )
        self._skippable = any(self._shape.optional)

    def __call__(self, events: Iterable[PersonEvent], since: int | None = None) -> PersonProgress:
        """The person's progress; with ``since``, only the entries, touches and timers from
        that instant on, the events before it (``lookback_us``) read for what those need."""
        definition = self.definition
        o = self._order(events)
        # Each step event's tracked property values as text, read once for entries and
        # touches (only events that match a step are used by either).
        texts = [
            _texts(self._tracked, e) if matched else _NO_TEXTS
            for e, matched in zip(o.events, o.steps, strict=True)
        ]
        entries = [
            self._entry(o, first, path, texts, disqualified)
            for first, path, disqualified in self._paths(o)
        ]
        timers = _timers(definition, o, entries) if definition.remarketing else ()
        touches = _touches(definition, o)
        if since is not None and o.stream.ts and o.stream.ts[0] < since:  # events before it
            entries = [e for e in entries if e.t0 >= since]
            touches = tuple([t for t in touches if t.ts >= since])
            timers = tuple([t for t in timers if t.entry_t0 >= since])
        return PersonProgress(tuple(entries), touches, timers)

    def concerns(
        self, name: str, properties: Mapping[str, Any], context: Mapping[str, Any]
    ) -> bool:
        """Whether this event can change anything a person's progress holds.

        Not if it fails a global filter (it is not seen at all). In ``strict`` order every
        other event can (any event between two steps ends an entry). Otherwise only one that
        matches a step or an exclusion: every rule passes over an event matching neither,
        and it sorts after the matching events of its instant, so the touches' sequence
        numbers stay as they were too. A person's new events that all match nothing leave
        their stored entries, touches and timers exactly right.
        """
        if not all(c.matches(properties, context) for c in self._filters):
            return False
        if self.definition.order == "strict" or self._steps(name, properties, context):
            return True
        return any(x.matcher.matches(name, properties, context) for x in self._exclusions)

    def _steps(
        self, name: str, properties: Mapping[str, Any], context: Mapping[str, Any]
    ) -> frozenset[int]:
        """The (0-based) steps an event matches."""
        fixed = self._fixed.get(name if name in self._candidates else None)
        if fixed is not None:
            return fixed
        return frozenset(
            k
            for k, matcher in self._candidates.get(name, self._unnamed)
            if not matcher.conditions or matcher.matches(name, properties, context)
        )

    def _order(self, events: Iterable[PersonEvent]) -> _Ordered:
        unique: Iterable[PersonEvent] = {e.event_id: e for e in events}.values()
        if self._filters:
            unique = [
                e for e in unique if all(c.matches(e.properties, e.context) for c in self._filters)
            ]
        tagged = []
        for e in unique:
            matched = self._steps(e.name, e.properties, e.context)
            tagged.append((e.ts, min(matched, default=NO_STEP), e.event_id, e, matched))
        tagged.sort(key=lambda t: (t[0], t[1], t[2]))
        ts = tuple([t[0] for t in tagged])
        tied = len(set(ts)) < len(ts)
        if tied:
            starts = [j for j in range(len(ts)) if not j or ts[j] != ts[j - 1]]
            instants = list(zip(starts, [*starts[1:], len(ts)], strict=True))
        else:
            instants = list(zip(range(len(ts)), range(1, len(ts) + 1), strict=True))
        events, steps = tuple([t[3] for t in tagged]), tuple([t[4] for t in tagged])
        return _Ordered(events, steps, Stream(ts, steps, instants), tied)

    def _paths(self, o: _Ordered) -> list[tuple[int, list[int], bool]]:
        """(first event, path, disqualified) per entry of the person."""
        if self.definition.order == "any":
            excluded, voids = any_order_voids(self._exclusions, o.events)
            opened = any_paths(self._shape, o.stream, excluded, voids)
            instants = o.stream.instants
            return [(instants[i][0], path, False) for i, path in opened]  # never disqualified
        blocked = None
        if self._exclusions:
            found = exclusion_times(self._exclusions, o.events)
            blocked = Blocked(self._exclusions, found, self.definition.window_us)
        if o.tied or self._skippable:
            # An instant's first event matches its lowest step (canonical order).
            starts = [a for a, _ in o.stream.instants]
            paths = (
                (starts[i], ordered_path(self._shape, o.stream, i))
                for i, a in enumerate(starts)
                if 0 in o.steps[a]
            )
        else:
            paths = (
                (j, plain_path(self._shape, o.stream, j)) for j, m in enumerate(o.steps) if 0 in m
            )
        if blocked is None:
            return [(first, path, False) for first, path in paths]
        ts = o.stream.ts
        return [
            (first, path, blocked.disqualify([ts[j] if j >= 0 else None for j in path]))
            for first, path in paths
        ]

    def _entry(
        self, o: _Ordered, first: int, path: Sequence[int], texts: Sequence[Texts], bad: bool
    ) -> Entry:
        events = o.events
        if -1 not in path:  # no optional step skipped: the common case, kept cheap
            chosen = [texts[j] for j in path]
            times: tuple[int | None, ...] = tuple([events[j].ts for j in path])
            values = {p: tuple([t[p] for t in chosen]) for p in self._tracked}
        else:
            times = tuple([events[j].ts if j >= 0 else None for j in path])
            values = {
                p: tuple([texts[j][p] if j >= 0 else None for j in path]) for p in self._tracked
            }
        return Entry(events[first].ts, times, bad, values)


Texts = Mapping[str, str | None]  # tracked property -> text, per event
_NO_TEXTS: Texts = {}


def _texts(tracked: tuple[str, ...], e: PersonEvent) -> Texts:
    """The event's values of these properties as text (read once per event)."""
    found: dict[str, str | None] | None = e.memo.get(tracked)
    if found is None:
        found = {}
        for p in tracked:
            value = e.properties.get(p) if "." not in p else lookup(p, e.properties, e.context)
            found[p] = (value or None) if type(value) is str else text_or_none(value)
        e.memo[tracked] = found
    return found


def _touches(definition: FunnelDefinition, o: _Ordered) -> tuple[Touch, ...]:
    if not definition.breakdowns:
        return ()
    touches = []
    breakdowns = definition.breakdowns
    previous_ts, seq = None, 0
    for e, matched in zip(o.events, o.steps, strict=True):
        # seq orders events of the same instant; it stays put when other instants change.
        seq = seq + 1 if e.ts == previous_ts else 0
        previous_ts = e.ts
        if not matched:
            continue
        values = _texts(breakdowns, e)  # shared with other funnels: read only
        if any(values.values()):  # texts are None or non-empty
            touches.append(Touch(e.ts, seq, values))
    return tuple(touches)


def _timers(
    definition: FunnelDefinition, o: _Ordered, entries: Sequence[Entry]
) -> tuple[Timer, ...]:
    """Occurrences of every rule for every clean entry that got to the rule's from_step.

    An entry gets there when it does that step or a later one (an optional from_step may be
    skipped). An occurrence is cancelled when the person did the goal step's event at or
    after that and no later than the occurrence's due time (window or not).

    In ``any`` order every instant with a step event starts an entry, so one journey is
    many overlapping entries: an entry gets a rule's timers only when no entry that started
    at most one window before it also got to the rule's from_step (one timer set per
    journey; entries are in start order).
    """
    timers = []
    journeys = definition.order == "any"
    for rule in definition.remarketing:
        goal = definition.steps[rule.goal_step - 1].matcher
        goals = [e.ts for e in o.events if goal.matches(e.name, e.properties, e.context)]
        previous: int | None = None  # start of the latest entry that got to from_step
        for entry in entries:
            since = None if entry.disqualified else entry.passed_at(rule.from_step)
            if since is None:
                continue
            if journeys:
                part_of = previous is not None and entry.t0 - previous <= definition.window_us
                previous = entry.t0
                if part_of:
                    continue
            k = bisect_left(goals, since)
            goal_at = goals[k] if k < len(goals) else None
            for n, offset in enumerate(rule.offsets_s()):
                due = since + offset * US
                cancelled = goal_at is not None and goal_at <= due
                timers.append(Timer(rule.name, entry.t0, n, due, cancelled))
    return tuple(timers)
