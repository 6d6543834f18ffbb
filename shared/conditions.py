"""Step and exclusion conditions: how an event's properties are read, compared and grouped.

Pure: standard library only. Values compare numerically when both sides are numbers, else as
strings (0 is "0", True is "true"); breakdown values are those strings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Operator = Literal["eq", "neq", "in", "contains", "gt", "gte", "lt", "lte", "is_set", "not_set"]


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
