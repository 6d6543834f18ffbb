"""The funnel engine: a person's events in, that person's funnel entries out.

Pure and deterministic (standard library only). The aggregator recomputes a person from all
of their stored events whenever one of them arrives, so a late, out-of-order or duplicate
event gives exactly what in-order delivery gives: there are no blind increments to undo.

Matching rules (BRIEF section 2): events are ordered by time, ties broken by the lowest step
they match, then by event id. Each step-1 event opens an entry; a later event moves an entry
forward by at most one step, and only up to ``t0 + window`` inclusive. Each step is taken by
the earliest qualifying event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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


Texts = Sequence[Mapping[str, str | None]]  # per ordered event: tracked property -> text


@dataclass(frozen=True, slots=True)
class _Ordered:
    events: tuple[PersonEvent, ...]
    steps: tuple[frozenset[int], ...]  # 0-based step indexes each event matches


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


def evaluate(definition: FunnelDefinition, events: Iterable[PersonEvent]) -> PersonProgress:
    return Evaluator(definition)(events)


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
        self._tracked = definition.tracked_properties  # the breakdowns among them
        self._open_entry = {"ordered": _ordered_entry, "strict": _strict_entry, "any": _any_entry}[
            definition.order
        ]

    def __call__(self, events: Iterable[PersonEvent]) -> PersonProgress:
        definition = self.definition
        ordered = self._order(events)
        # Each step event's tracked property values as text, read once for entries and
        # touches (only events that match a step are used by either).
        texts = [
            _texts(self._tracked, e) if matched else _NO_TEXTS
            for e, matched in zip(ordered.events, ordered.steps, strict=True)
        ]
        entries = [
            _entry(
                definition, self._tracked, ordered, self._open_entry(definition, ordered, i), texts
            )
            for i, matched in enumerate(ordered.steps)
            if 0 in matched
        ]
        timers = _timers(definition, ordered, entries) if definition.remarketing else ()
        return PersonProgress(tuple(entries), _touches(definition, ordered), timers)

    def concerns(
        self, name: str, properties: Mapping[str, Any], context: Mapping[str, Any]
    ) -> bool:
        """Whether this event can change anything a person's progress holds.

        In ``strict`` order every event can (any event between two steps ends an entry).
        Otherwise only one that matches a step or an exclusion: every rule passes over an
        event matching neither, and it sorts after the matching events of its instant, so
        the touches' sequence numbers stay as they were too. A person's new events that all
        match nothing leave their stored entries, touches and timers exactly right.
        """
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
        unique = {e.event_id: e for e in events}.values()
        tagged = []
        for e in unique:
            matched = self._steps(e.name, e.properties, e.context)
            tagged.append((e.ts, min(matched, default=NO_STEP), e.event_id, e, matched))
        tagged.sort(key=lambda t: (t[0], t[1], t[2]))
        return _Ordered(tuple(t[3] for t in tagged), tuple(t[4] for t in tagged))


_NO_TEXTS: Mapping[str, str | None] = {}


def _texts(tracked: tuple[str, ...], e: PersonEvent) -> Mapping[str, str | None]:
    """The event's values of these properties as text (read once per event)."""
    found: dict[str, str | None] | None = e.memo.get(tracked)
    if found is None:
        found = {}
        for p in tracked:
            value = e.properties.get(p) if "." not in p else lookup(p, e.properties, e.context)
            found[p] = (value or None) if type(value) is str else text_or_none(value)
        e.memo[tracked] = found
    return found


def _ordered_entry(definition: FunnelDefinition, o: _Ordered, start: int) -> list[int]:
    used, deadline, n = [start], o.events[start].ts + definition.window_us, len(definition.steps)
    for j in range(start + 1, len(o.events)):
        if o.events[j].ts > deadline or len(used) == n:
            break
        if len(used) in o.steps[j]:
            used.append(j)
    return used


def _strict_entry(definition: FunnelDefinition, o: _Ordered, start: int) -> list[int]:
    used, deadline, n = [start], o.events[start].ts + definition.window_us, len(definition.steps)
    for j in range(start + 1, len(o.events)):
        if o.events[j].ts > deadline or len(used) == n or len(used) not in o.steps[j]:
            break
        used.append(j)
    return used


def _any_entry(definition: FunnelDefinition, o: _Ordered, start: int) -> list[int]:
    used, done = [start], {0}
    deadline, n = o.events[start].ts + definition.window_us, len(definition.steps)
    for j in range(start + 1, len(o.events)):
        if o.events[j].ts > deadline or len(used) == n:
            break
        fresh = o.steps[j] - done
        if fresh:
            done.add(min(fresh))
            used.append(j)
    return used


def _entry(
    definition: FunnelDefinition,
    tracked: Sequence[str],
    o: _Ordered,
    used: Sequence[int],
    texts: Texts,
) -> Entry:
    times = tuple(o.events[j].ts for j in used)
    values = {p: tuple(texts[j][p] for j in used) for p in tracked}
    return Entry(times[0], times, _disqualified(definition, o, times), values)


def _disqualified(definition: FunnelDefinition, o: _Ordered, times: Sequence[int]) -> bool:
    """Whether an exclusion event falls strictly between steps a and b (or a and window end)."""
    step_instants = set(times)
    for x in definition.exclusions:
        if len(times) < x.from_step:
            continue
        low = times[x.from_step - 1]
        closed = len(times) >= x.to_step
        high = times[x.to_step - 1] if closed else times[0] + definition.window_us
        for e in o.events:
            inside = low < e.ts < high if closed else low < e.ts <= high
            if (
                inside
                and e.ts not in step_instants
                and x.matcher.matches(e.name, e.properties, e.context)
            ):
                return True
    return False


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
    """Occurrences of every rule for every clean entry that reached the rule's from_step.

    An occurrence is cancelled when the person did the goal step's event at or after the
    entry reached from_step and no later than the occurrence's due time (window or not).
    """
    timers = []
    for rule in definition.remarketing:
        goal = definition.steps[rule.goal_step - 1].matcher
        for entry in entries:
            if entry.disqualified or entry.reached < rule.from_step:
                continue
            since = entry.step_times[rule.from_step - 1]
            goal_at = next(
                (
                    e.ts
                    for e in o.events
                    if e.ts >= since and goal.matches(e.name, e.properties, e.context)
                ),
                None,
            )
            for k, offset in enumerate(rule.offsets_s()):
                due = since + offset * US
                cancelled = goal_at is not None and goal_at <= due
                timers.append(Timer(rule.name, entry.t0, k, due, cancelled))
    return tuple(timers)
