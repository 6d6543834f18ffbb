"""The production path without I/O: engine per person, then the report (for property tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from services.aggregator.engine import PersonEvent, evaluate
from services.api.reports.python import Breakdown, FunnelReport, Window, funnel_report
from shared.funnel import Entry, FunnelDefinition, Touch
from tests.oracle_identity import Sent


def production_report(
    f: FunnelDefinition,
    events_by_person: dict[str, list[PersonEvent]],
    window: Window,
    count: str = "uniques",
    breakdown: Breakdown | None = None,
) -> FunnelReport:
    entries: dict[str, list[Entry]] = {}
    touches: dict[str, list[Touch]] = {}
    for person, events in events_by_person.items():
        progress = evaluate(f, events)
        selected = [e for e in progress.entries if window.start <= e.t0 < window.end]
        if selected:
            entries[person] = selected
        touches[person] = [t for t in progress.touches if window.start <= t.ts < window.end]
    return funnel_report(f, entries, window, count, breakdown, touches)  # type: ignore[arg-type]


def merged_by(root: Callable[[str], str], events: Iterable[Sent]) -> dict[str, list[PersonEvent]]:
    """Each event under the person ``root`` names for its person id (deduplicated)."""
    by_person: dict[str, list[PersonEvent]] = {}
    for e in {e.event_id: e for e in events}.values():
        by_person.setdefault(root(e.person_id), []).append(e.as_person_event())
    return by_person
