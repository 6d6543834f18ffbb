"""The oracle's re-marketing occurrences with one timer set per ``any``-order journey.

README: an entry reaches a rule's ``from_step`` when it does that step or a later one;
occurrence k is due ``after + k * repeat_every`` after that while the offset stays within
``until``; the goal step done at or after that and no later than the due time cancels it;
disqualified entries have none. In ``any`` order an entry gets a rule's timers only when no
other entry that started at most one window before it also reached the rule's
``from_step``. Brute force over the oracle's own entries (``oracle_paths``).
"""

from __future__ import annotations

from services.aggregator.engine import PersonEvent
from shared.funnel import US, FunnelDefinition, RemarketingRule
from tests.oracle_paths import Path, matches, paths, prepare

Due = tuple[str, str, int, int, int]  # (person, rule, entry t0, occurrence, due µs)


def due_offsets_s(rule: RemarketingRule) -> list[int]:
    if not rule.repeat_every_s:
        return [rule.after_s]
    until = rule.until_s if rule.until_s is not None else rule.after_s
    return list(range(rule.after_s, until + 1, rule.repeat_every_s))


def reached_from(path: Path, step: int) -> int | None:
    """When the entry first stood at ``step`` or beyond."""
    times = [path.time(k) for k in range(step - 1, path.reached)]
    return min((t for t in times if t is not None), default=None)


def timed_paths(f: FunnelDefinition, rule: RemarketingRule, found: list[Path]) -> list[Path]:
    """The entries that get the rule's timers."""
    there = [p for p in found if not p.disqualified and reached_from(p, rule.from_step) is not None]
    if f.order != "any":
        return there
    return [p for p in there if not any(p.t0 - f.window_us <= q.t0 < p.t0 for q in there)]


def journey_timers(f: FunnelDefinition, events_by_person: dict[str, list[PersonEvent]]) -> set[Due]:
    """Every occurrence not cancelled, of every person."""
    out: set[Due] = set()
    for person, raw in events_by_person.items():
        events = prepare(f, raw)
        found = paths(f, events)
        for rule in f.remarketing:
            goals = [e.ts for e in events if matches(f.steps[rule.goal_step - 1].matcher, e)]
            for path in timed_paths(f, rule, found):
                since = reached_from(path, rule.from_step)
                assert since is not None
                for n, offset in enumerate(due_offsets_s(rule)):
                    due = since + offset * US
                    if not any(since <= g <= due for g in goals):
                        out.add((person, rule.name, path.t0, n, due))
    return out
