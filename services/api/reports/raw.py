"""Reports evaluated from a range's raw stored events rather than from stored entries: for
global filters (conditions every event must meet), ad-hoc breakdowns (any event property,
not only the funnel's declared ones) and all-events attribution (the funnel over each
value's events alone). Slower than the stored-entries path, and exact: the same engine the
aggregator runs, over the events that can affect the range's entries. Pure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from services.aggregator.engine import Evaluator, PersonEvent, evaluate_by_value
from services.api.reports.python import Breakdown, FunnelReport, Window, funnel_report
from shared.funnel import Condition, CountMode, Entry, FunnelDefinition, Touch, for_report


def needs_events(
    definition: FunnelDefinition, breakdown: Breakdown | None, filters: Sequence[Condition]
) -> bool:
    """Whether a report must be evaluated from raw events (stored entries cannot answer)."""
    if filters:
        return True
    if breakdown is None:
        return False
    if breakdown.attribution == "all_events":
        return True
    if breakdown.attribution == "step":
        return breakdown.property not in definition.tracked_properties
    return breakdown.property not in definition.breakdowns


def events_reach_us(definition: FunnelDefinition, window: Window) -> tuple[int, int]:
    """The instants [lo, hi) of the events the range's entries depend on: an entry starts
    in [start, end) and depends only on the events up to the end of its window."""
    return window.start, window.end + definition.window_us


def entries_from_events(
    definition: FunnelDefinition,
    events_by_person: Mapping[str, Sequence[PersonEvent]],
    window: Window,
    filters: Sequence[Condition] = (),
    breakdown: str | None = None,
) -> tuple[dict[str, list[Entry]], dict[str, list[Touch]]]:
    """Each person's entries starting in the range and touches in it, evaluated from
    their events with the report's filters and tracking the ``breakdown`` property."""
    f = for_report(definition, filters, breakdown)
    evaluator = Evaluator(f)
    entries: dict[str, list[Entry]] = {}
    touches: dict[str, list[Touch]] = {}
    for person, events in events_by_person.items():
        progress = evaluator(events)
        selected = [e for e in progress.entries if window.start <= e.t0 < window.end]
        if selected:
            entries[person] = selected
        touches[person] = [t for t in progress.touches if window.start <= t.ts < window.end]
    return entries, touches


def report_from_events(
    definition: FunnelDefinition,
    events_by_person: Mapping[str, Sequence[PersonEvent]],
    window: Window,
    count: CountMode,
    breakdown: Breakdown | None,
    filters: Sequence[Condition] = (),
) -> FunnelReport:
    """The report of the range, evaluated from the persons' events."""
    prop = breakdown.property if breakdown is not None else None
    entries, touches = entries_from_events(definition, events_by_person, window, filters, prop)
    by_value: dict[str | None, dict[str, list[Entry]]] = defaultdict(dict)
    if breakdown is not None and breakdown.attribution == "all_events":
        f = for_report(definition, filters, prop)
        evaluator = Evaluator(f)
        for person, events in events_by_person.items():
            for value, progress in evaluate_by_value(
                f, events, breakdown.property, evaluator
            ).items():
                selected = [e for e in progress.entries if window.start <= e.t0 < window.end]
                if selected:
                    by_value[value][person] = selected
    return funnel_report(definition, entries, window, count, breakdown, touches, by_value)
