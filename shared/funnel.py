"""Funnel definitions and the per-entry progress the aggregator stores and the API reads.

Pure data: standard library only, no clock, no I/O. Instants are integers (microseconds since
the Unix epoch, UTC) so that ordering and window arithmetic are exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import takewhile
from typing import Any, Literal

from shared.conditions import (
    VALUE_NUMBER,
    Condition,
    Matcher,
    Operator,
    as_number,
    as_text,
    is_empty,
    lookup,
    same_value,
    text_or_none,
    value_number,
)

__all__ = [
    "VALUE_NUMBER",
    "Condition",
    "Matcher",
    "Operator",
    "as_number",
    "as_text",
    "is_empty",
    "lookup",
    "same_value",
    "text_or_none",
    "value_number",
]

Order = Literal["ordered", "strict", "any"]
CountMode = Literal["uniques", "totals"]
WindowUnit = Literal["second", "minute", "hour", "day", "week"]
UNIT_SECONDS: Mapping[str, int] = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86_400,
    "week": 7 * 86_400,
}
MIN_STEPS, MAX_STEPS = 2, 32
MIN_WINDOW_S, MAX_WINDOW_S, DEFAULT_WINDOW_S = 1, 366 * 86_400, 7 * 86_400
US = 1_000_000


@dataclass(frozen=True, slots=True)
class Step:
    """A step; an ``optional`` one (never step 1, not in ``any`` order) may be skipped."""

    matcher: Matcher
    name: str
    target_rate: float | None = None
    win_probability: float | None = None
    rate_name: str | None = None
    optional: bool = False


@dataclass(frozen=True, slots=True)
class Exclusion:
    """An event that disqualifies an entry when it falls strictly between two of its steps.

    Steps are numbered from 1; ``to_step`` not reached means up to the end of the window. In
    ``any`` order the steps count distinct steps done (see the README's funnel semantics).
    """

    matcher: Matcher
    from_step: int
    to_step: int


@dataclass(frozen=True, slots=True)
class RemarketingRule:
    """Notify when an entry reached ``from_step`` but the person not ``goal_step`` after a while.

    Occurrence k is due ``after_s + k * repeat_every_s`` after the entry reached from_step,
    for as long as that offset stays within ``until_s`` (only k = 0 without repeats).
    """

    name: str
    from_step: int
    goal_step: int
    after_s: int
    repeat_every_s: int | None = None
    until_s: int | None = None
    grace_s: int = 4 * 3600
    created_at_us: int = 0

    def offsets_s(self) -> tuple[int, ...]:
        if not self.repeat_every_s:
            return (self.after_s,)
        limit = self.until_s if self.until_s is not None else self.after_s
        return tuple(range(self.after_s, limit + 1, self.repeat_every_s))


@dataclass(frozen=True, slots=True)
class FunnelDefinition:
    """A funnel; ``filters`` (global, for reports) must hold for an event to be seen at all."""

    steps: tuple[Step, ...]
    window_s: int = DEFAULT_WINDOW_S
    order: Order = "ordered"
    exclusions: tuple[Exclusion, ...] = ()
    breakdowns: tuple[str, ...] = ()
    value_property: str | None = None
    remarketing: tuple[RemarketingRule, ...] = ()
    filters: tuple[Condition, ...] = ()

    @property
    def window_us(self) -> int:
        return self.window_s * US

    @property
    def tracked_properties(self) -> tuple[str, ...]:
        """Properties whose per-step values each entry keeps: breakdowns, then the value."""
        extra = (self.value_property,) if self.value_property else ()
        return tuple(dict.fromkeys(self.breakdowns + extra))


@dataclass(frozen=True, slots=True)
class Entry:
    """One attempt at the funnel, opened at ``t0`` by the events of that instant.

    ``reached`` is ``len(step_times)``. In ``ordered`` and ``strict`` order ``step_times[k]``
    is when step k+1 was done, ``None`` for an optional step the entry skipped, so ``reached``
    is the furthest step done. In ``any`` order ``step_times[k]`` is when the entry had done
    k+1 distinct steps. ``step_values[p][k]`` is property p of the event that did that step
    (``None`` when it is missing or the step was skipped), for the tracked properties.
    """

    t0: int
    step_times: tuple[int | None, ...]
    disqualified: bool = False
    step_values: Mapping[str, tuple[str | None, ...]] = field(default_factory=dict)

    @property
    def reached(self) -> int:
        return len(self.step_times)

    @property
    def last_time(self) -> int:
        """When the entry did its furthest step (never ``None``)."""
        return next(t for t in reversed(self.step_times) if t is not None)

    def done(self, step: int) -> bool:
        """Whether the entry did this (1-based) step; a skipped optional step is not done."""
        return step <= len(self.step_times) and self.step_times[step - 1] is not None

    def passed_at(self, step: int) -> int | None:
        """When the entry first stood at ``step`` or beyond: the time of the earliest step
        done from ``step`` (1-based) on, ``None`` if it never got there."""
        return next((t for t in self.step_times[step - 1 :] if t is not None), None)

    def from_previous_us(self, step: int) -> int | None:
        """Time from the previous step done on the path to this (1-based) step, if done."""
        done_at = self.step_times[step - 1] if 2 <= step <= len(self.step_times) else None
        if done_at is None:
            return None
        return done_at - next(t for t in reversed(self.step_times[: step - 1]) if t is not None)


def counted_key(entry: Entry) -> tuple[int, int, int]:
    """Sort key of a person's entries, the counted one first: furthest, then the one that
    did that furthest step first, then the one that started last."""
    return (-entry.reached, entry.last_time, -entry.t0)


def counted_entry(entries: Iterable[Entry]) -> Entry | None:
    """The entry a person is counted by (``uniques``): the first clean one by ``counted_key``,
    unless a disqualified entry got further (then the person is not counted at all)."""
    found = list(entries)
    clean = [e for e in found if not e.disqualified]
    if not clean:
        return None
    best = min(clean, key=counted_key)
    return best if best.reached >= max(e.reached for e in found) else None


def totals_entries(definition: FunnelDefinition, entries: Iterable[Entry]) -> list[Entry]:
    """A person's entries that ``totals`` counts: every clean one. In ``any`` order, where
    every instant with a step event starts an entry, only the attempts: an entry is part of
    the attempt before it when that started at most a window earlier and got as far."""
    clean = sorted((e for e in entries if not e.disqualified), key=lambda e: e.t0)
    if definition.order != "any":
        return clean
    attempts: list[Entry] = []
    for e in clean:
        earliest = e.t0 - definition.window_us
        recent = takewhile(lambda a: a.t0 >= earliest, reversed(attempts))  # noqa: B023
        if not any(a.t0 < e.t0 and a.reached >= e.reached for a in recent):
            attempts.append(e)
    return attempts


@dataclass(frozen=True, slots=True)
class Touch:
    """A person's event that matches some step, with its tracked property values."""

    ts: int
    seq: int
    values: Mapping[str, str | None]


def entry_value(definition: FunnelDefinition, entry: Entry) -> float | None:
    """The latest numeric value of the value property along the entry's steps."""
    if definition.value_property is None:
        return None
    numbers = [value_number(v) for v in entry.step_values.get(definition.value_property, ())]
    known = [n for n in numbers if n is not None]
    return known[-1] if known else None


def for_report(
    definition: FunnelDefinition,
    filters: Sequence[Condition] = (),
    breakdown: str | None = None,
) -> FunnelDefinition:
    """The definition to evaluate raw events with for a report's global ``filters`` (events
    failing one are not seen: steps, exclusions, touches, strict interruptions) and an
    ad-hoc ``breakdown`` property (tracked in touches and step values). Without re-marketing
    rules: a report has no timers to make."""
    breakdowns = definition.breakdowns
    if breakdown is not None and breakdown not in breakdowns:
        breakdowns = (*breakdowns, breakdown)
    filters = definition.filters + tuple(filters)
    return replace(definition, filters=filters, breakdowns=breakdowns, remarketing=())


def window_seconds(doc: Mapping[str, Any]) -> int:
    """The window of a stored definition: ``window`` (value and unit) or ``window_seconds``."""
    window = doc.get("window")
    if window:
        return int(window["value"]) * UNIT_SECONDS[window.get("unit", "second")]
    return int(doc.get("window_seconds", DEFAULT_WINDOW_S))


def definition_from_doc(doc: Mapping[str, Any]) -> FunnelDefinition:
    """Build a definition from its stored JSON form (already validated by the API)."""
    steps = tuple(
        Step(
            matcher=_matcher(s),
            name=s.get("name") or s.get("event") or f"step {i + 1}",
            target_rate=s.get("target_rate"),
            win_probability=s.get("win_probability"),
            rate_name=s.get("rate_name"),
            optional=bool(s.get("optional", False)),
        )
        for i, s in enumerate(doc["steps"])
    )
    exclusions = tuple(
        Exclusion(_matcher(x), int(x.get("from_step", 1)), int(x.get("to_step") or len(steps)))
        for x in doc.get("exclusions") or ()
    )
    return FunnelDefinition(
        steps=steps,
        window_s=window_seconds(doc),
        order=doc.get("order", "ordered"),
        exclusions=exclusions,
        breakdowns=tuple(doc.get("breakdowns") or ()),
        value_property=doc.get("value_property"),
        remarketing=tuple(
            RemarketingRule(
                name=r["name"],
                from_step=int(r.get("from_step", 1)),
                goal_step=int(r.get("goal_step") or len(steps)),
                after_s=int(r["after_seconds"]),
                repeat_every_s=r.get("repeat_every_seconds"),
                until_s=r.get("until_seconds"),
                grace_s=int(r.get("grace_seconds", 4 * 3600)),
                created_at_us=int(r.get("created_at_us", 0)),
            )
            for r in doc.get("remarketing") or ()
        ),
        filters=_conditions(doc.get("filters") or ()),
    )


def _matcher(doc: Mapping[str, Any]) -> Matcher:
    return Matcher(event=doc.get("event"), conditions=_conditions(doc.get("where") or ()))


def _conditions(docs: Iterable[Mapping[str, Any]]) -> tuple[Condition, ...]:
    return tuple(Condition(c["property"], c.get("op", "eq"), c.get("value")) for c in docs)
