"""Funnel definitions and the per-entry progress the aggregator stores and the API reads.

Pure data: standard library only, no clock, no I/O. Instants are integers (microseconds since
the Unix epoch, UTC) so that ordering and window arithmetic are exact.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Order = Literal["ordered", "strict", "any"]
CountMode = Literal["uniques", "totals"]
Operator = Literal["eq", "neq", "in", "contains", "gt", "gte", "lt", "lte", "is_set", "not_set"]
MIN_STEPS, MAX_STEPS = 2, 32
MIN_WINDOW_S, MAX_WINDOW_S, DEFAULT_WINDOW_S = 60, 366 * 86_400, 7 * 86_400
US = 1_000_000


@dataclass(frozen=True, slots=True)
class Condition:
    """A test on one event property; ``context.x.y`` reads the event context instead."""

    property: str
    op: str = "eq"
    value: Any = None

    def matches(self, properties: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
        actual = lookup(self.property, properties, context)
        if self.op == "is_set":
            return not is_empty(actual)
        if self.op == "not_set":
            return is_empty(actual)
        if is_empty(actual):
            return self.op == "neq"
        if self.op in ("eq", "neq"):
            return same_value(actual, self.value) == (self.op == "eq")
        if self.op == "in":
            return any(same_value(actual, v) for v in self.value)
        if self.op == "contains":
            if isinstance(actual, list):
                return any(same_value(a, self.value) for a in actual)
            return as_text(self.value) in as_text(actual)
        return _compare(self.op, as_number(actual), as_number(self.value))


@dataclass(frozen=True, slots=True)
class Matcher:
    """Event name (``None``: any event) plus conditions that must all hold."""

    event: str | None
    conditions: tuple[Condition, ...] = ()

    def matches(self, name: str, properties: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
        if self.event is not None and name != self.event:
            return False
        return all(c.matches(properties, context) for c in self.conditions)


@dataclass(frozen=True, slots=True)
class Step:
    matcher: Matcher
    name: str
    target_rate: float | None = None
    win_probability: float | None = None
    rate_name: str | None = None


@dataclass(frozen=True, slots=True)
class Exclusion:
    """An event that disqualifies an entry when it falls strictly between two of its steps.

    Steps are numbered from 1; ``to_step`` not reached means up to the end of the window.
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
    steps: tuple[Step, ...]
    window_s: int = DEFAULT_WINDOW_S
    order: Order = "ordered"
    exclusions: tuple[Exclusion, ...] = ()
    breakdowns: tuple[str, ...] = ()
    value_property: str | None = None
    remarketing: tuple[RemarketingRule, ...] = ()

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
    """One attempt at the funnel: opened by a step-1 event at ``t0``.

    ``step_times[k]`` is when step k+1 was reached, so ``len(step_times)`` is how far the entry
    got. ``step_values[p][k]`` is property p of the event that reached step k+1 (``None`` when
    missing), for the funnel's tracked properties.
    """

    t0: int
    step_times: tuple[int, ...]
    disqualified: bool = False
    step_values: Mapping[str, tuple[str | None, ...]] = field(default_factory=dict)

    @property
    def reached(self) -> int:
        return len(self.step_times)


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


def lookup(path: str, properties: Mapping[str, Any], context: Mapping[str, Any]) -> Any:
    if path.startswith("context."):
        source: Any = context
        parts = path.split(".")[1:]
    elif path in properties:
        return properties[path]
    else:
        source, parts = properties, path.split(".")
    for part in parts:
        if not isinstance(source, Mapping) or part not in source:
            return None
        source = source[part]
    return source


def is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def as_text(value: Any) -> str:
    """The string form values are compared and grouped by: 0 is "0", True is "true"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


# A value property's number: plain decimal notation, as JSON writes numbers. Deliberately
# narrower than Python's float() (no "1_000", "inf", non-ASCII digits, huge exponents), so that
# PostgreSQL, which sums values in reports, reads exactly the same strings as numbers.
VALUE_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,2})?$"
_VALUE_NUMBER = re.compile(VALUE_NUMBER)


def value_number(value: Any) -> float | None:
    """A value property's value as a number, or ``None`` when it is not one."""
    if isinstance(value, str):
        return float(value) if _VALUE_NUMBER.fullmatch(value) else None
    return as_number(value)


def same_value(actual: Any, expected: Any) -> bool:
    """Numeric equality when both sides are numbers, else string equality."""
    a, b = as_number(actual), as_number(expected)
    if a is not None and b is not None:
        return a == b
    return as_text(actual) == as_text(expected)


def text_or_none(value: Any) -> str | None:
    return None if is_empty(value) else as_text(value)


def _compare(op: str, a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return False
    return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op]


def definition_from_doc(doc: Mapping[str, Any]) -> FunnelDefinition:
    """Build a definition from its stored JSON form (already validated by the API)."""
    steps = tuple(
        Step(
            matcher=_matcher(s),
            name=s.get("name") or s.get("event") or f"step {i + 1}",
            target_rate=s.get("target_rate"),
            win_probability=s.get("win_probability"),
            rate_name=s.get("rate_name"),
        )
        for i, s in enumerate(doc["steps"])
    )
    exclusions = tuple(
        Exclusion(_matcher(x), int(x.get("from_step", 1)), int(x.get("to_step", len(steps))))
        for x in doc.get("exclusions") or ()
    )
    return FunnelDefinition(
        steps=steps,
        window_s=int(doc.get("window_seconds", DEFAULT_WINDOW_S)),
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
    )


def _matcher(doc: Mapping[str, Any]) -> Matcher:
    conditions: Sequence[Mapping[str, Any]] = doc.get("where") or ()
    return Matcher(
        event=doc.get("event"),
        conditions=tuple(
            Condition(c["property"], c.get("op", "eq"), c.get("value")) for c in conditions
        ),
    )
