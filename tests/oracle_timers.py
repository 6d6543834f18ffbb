"""The oracle's re-marketing occurrences, from its own entries (``oracle_paths``).

README: an entry reaches a rule's ``from_step`` when it does that step or a later one;
occurrence k is due ``after + k * repeat_every`` after that, while the offset stays within
``until``; reaching the goal step at or after that and no later than the due time (window or
not) cancels it. Disqualified entries have none. One notice per entry start; in ``any``
order one per journey (``oracle_journeys.timed_paths``).
"""

from __future__ import annotations

from services.aggregator.engine import PersonEvent
from shared.funnel import US, FunnelDefinition, RemarketingRule
from tests.oracle_journeys import timed_paths
from tests.oracle_paths import Path, matches, paths, prepare

Due = tuple[str, str, int, int, int]  # (person, rule, entry t0, occurrence, due µs)


def offsets_s(rule: RemarketingRule) -> list[int]:
    if not rule.repeat_every_s:
        return [rule.after_s]
    until = rule.until_s if rule.until_s is not None else rule.after_s
    found, k = [], 0
    while rule.after_s + k * rule.repeat_every_s <= until:
        found.append(rule.after_s + k * rule.repeat_every_s)
        k += 1
    return found


def _reached_from(path: Path, step: int) -> int | None:
    times = [path.time(k) for k in range(step - 1, path.reached)]
    return min((t for t in times if t is not None), default=None)


def oracle_timers(f: FunnelDefinition, events_by_person: dict[str, list[PersonEvent]]) -> set[Due]:
    """Every occurrence not cancelled, of every person."""
    found: set[Due] = set()
    for person, raw in events_by_person.items():
        events = prepare(f, raw)
        for rule in f.remarketing:
            goal = f.steps[rule.goal_step - 1].matcher
            goals = [e.ts for e in events if matches(goal, e)]
            for path in timed_paths(f, rule, paths(f, events)):  # any order: per journey
                since = None if path.disqualified else _reached_from(path, rule.from_step)
                if since is None:
                    continue
                for n, offset in enumerate(offsets_s(rule)):
                    due = since + offset * US
                    if not any(since <= g <= due for g in goals):
                        found.add((person, rule.name, path.t0, n, due))
    return found
