"""A small notation for funnel test cases: steps, persons' events and offsets as text.

``step("pv{url=/home}")`` is a step on event ``pv`` whose property ``url`` equals ``/home``;
``*`` is any event, a trailing ``?`` makes the step optional. ``person("signup@1h",
"x@3h30m{k=v}", "20*one@0")`` gives events at offsets from ``BASE`` (``d h m s``; a value
made of digits is a number); names without ``@`` follow each other 1 s apart.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from services.aggregator.engine import PersonEvent, evaluate
from shared.funnel import US, FunnelDefinition, counted_entry, definition_from_doc

BASE_S = 1_717_200_000  # 2024-06-01 00:00:00 UTC
BASE = BASE_S * US
_ids = itertools.count()
_SPEC = re.compile(r"^(?:(\d+)\*)?([^@{]+)(?:@([0-9dhms.]+))?(?:\{(.*)\})?$")
_UNITS = {"d": 86_400, "h": 3600, "m": 60, "s": 1}


def offset_s(text: str) -> float:
    if text == "0":
        return 0.0
    parts = re.findall(r"([0-9.]+)([dhms])", text)
    assert "".join(a + u for a, u in parts) == text, f"bad offset {text!r}"
    return sum(float(a) * _UNITS[u] for a, u in parts)


def _props(text: str | None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in filter(None, (text or "").split(",")):
        key, _, value = pair.partition("=")
        found[key.strip()] = int(value) if value.isdigit() else value
    return found


def step(text: str) -> dict[str, Any]:
    optional = text.endswith("?")
    match = _SPEC.match(text.removesuffix("?"))
    assert match, text
    _, name, _, props = match.groups()
    where = [{"property": k, "op": "eq", "value": v} for k, v in _props(props).items()]
    doc: dict[str, Any] = {"event": None if name == "*" else name, "where": where}
    return {**doc, "optional": True} if optional else doc


def exclusion(text: str, from_step: int, to_step: int) -> dict[str, Any]:
    return {**step(text), "from_step": from_step, "to_step": to_step}


def funnel(*steps: str, **options: Any) -> FunnelDefinition:
    return definition_from_doc({"steps": [step(s) for s in steps], **options})


def person(*specs: str) -> list[PersonEvent]:
    events, seq = [], 0.0
    for spec in specs:
        match = _SPEC.match(spec)
        assert match, spec
        times, name, at, props = match.groups()
        if at is None:
            at_s, seq = seq, seq + 1
        else:
            at_s = offset_s(at)
        for _ in range(int(times or 1)):
            ts = BASE + round(at_s * US)
            events.append(PersonEvent(f"e{next(_ids):08d}", ts, name, _props(props)))
    return events


def persons(*people: list[PersonEvent]) -> dict[str, list[PersonEvent]]:
    return {f"P{i + 1}": events for i, events in enumerate(people)}


def many(n: int, *specs: str) -> list[list[PersonEvent]]:
    return [person(*specs) for _ in range(n)]


def engine_counts(f: FunnelDefinition, events_by_person: dict[str, list[PersonEvent]]) -> list[int]:
    """Persons per step as the engine counts them: by ``counted_entry`` of their entries."""
    counts = [0] * len(f.steps)
    for events in events_by_person.values():
        entry = counted_entry(evaluate(f, events).entries)
        for k in range(len(f.steps)):
            counts[k] += bool(entry and entry.done(k + 1))
    return counts
