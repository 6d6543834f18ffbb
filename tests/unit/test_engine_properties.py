"""Property-based: the engine + report equal the oracle on random, shuffled, duplicated streams."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.aggregator.engine import Evaluator, PersonEvent
from services.api.reports.python import Breakdown, Window
from shared.funnel import US, definition_from_doc
from tests.oracle import oracle_report
from tests.pipeline import production_report

NAMES = ["a", "b", "c", "x"]


@st.composite
def conditions(draw: Any) -> list[dict[str, Any]]:
    if not draw(st.booleans()):
        return []
    op = draw(st.sampled_from(["eq", "neq", "gte", "is_set", "in"]))
    value = {"in": ["s", "1"], "is_set": None, "gte": 1}.get(
        op, draw(st.sampled_from(["s", "t", 0]))
    )
    return [{"property": draw(st.sampled_from(["ch", "n"])), "op": op, "value": value}]


@st.composite
def definitions(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(2, 4))
    steps = [
        {"event": draw(st.sampled_from([*NAMES[:3], None])), "where": draw(conditions())}
        for _ in range(n)
    ]
    steps[0]["event"] = draw(st.sampled_from(NAMES[:3]))
    exclusions = []
    if draw(st.booleans()):
        a = draw(st.integers(1, n - 1))
        exclusions.append({"event": "x", "from_step": a, "to_step": draw(st.integers(a + 1, n))})
    return {
        "steps": steps,
        "window_seconds": draw(st.sampled_from([60, 100])),
        "order": draw(st.sampled_from(["ordered", "strict", "any"])),
        "exclusions": exclusions,
        "breakdowns": ["ch"],
    }


@st.composite
def streams(draw: Any) -> dict[str, list[PersonEvent]]:
    persons: dict[str, list[PersonEvent]] = {}
    for p in range(draw(st.integers(1, 4))):
        events = []
        for i in range(draw(st.integers(0, 12))):
            properties = {}
            if draw(st.booleans()):
                properties["ch"] = draw(st.sampled_from(["s", "t", 0, ""]))
            if draw(st.booleans()):
                properties["n"] = draw(st.integers(0, 2))
            # Coarse times (10 s grid, 0 to 200 s) make ties and window edges common.
            ts = draw(st.integers(0, 20)) * 10 * US
            events.append(PersonEvent(f"p{p}e{i}", ts, draw(st.sampled_from(NAMES)), properties))
        # Delivery: shuffled, some events duplicated (a duplicate keeps its event id).
        delivered = draw(st.permutations(events))
        dups = draw(st.lists(st.sampled_from(events), max_size=3)) if events else []
        persons[f"p{p}"] = [*delivered, *dups]
    return persons


@settings(max_examples=1500, deadline=None)
@given(
    doc=definitions(),
    events=streams(),
    bounds=st.tuples(st.integers(0, 22), st.integers(0, 22)),
    now=st.integers(0, 40),
    count=st.sampled_from(["uniques", "totals"]),
    attribution=st.sampled_from([None, "first_touch", "last_touch", "step:1", "step:2"]),
)
def test_engine_and_report_equal_the_oracle(doc, events, bounds, now, count, attribution):
    f = definition_from_doc(doc)
    start, end = sorted(b * 10 * US for b in bounds)
    window = Window(start, end, now * 10 * US)
    breakdown = None
    if attribution is not None:
        kind, _, step = attribution.partition(":")
        breakdown = Breakdown("ch", kind if not step else "step", int(step or 1), limit=100)
    expected = oracle_report(
        f,
        events,
        window.start,
        window.end,
        window.now,
        count,
        "ch" if breakdown else None,
        attribution or "first_touch",
    )
    got = production_report(f, events, window, count, breakdown)
    assert [s.persons for s in got.steps] == expected.persons
    assert [s.in_progress for s in got.steps] == expected.in_progress
    if breakdown is not None:
        groups = {g.value: [s.persons for s in g.steps] for g in got.groups}
        assert groups == expected.groups


@settings(max_examples=1500, deadline=None)
@given(doc=definitions(), events=streams())
def test_events_that_concern_no_rule_change_nothing(doc, events):
    """The aggregator skips a funnel for persons whose new events do not concern it: leaving
    those events out must give the very same entries, touches and timers."""
    doc["remarketing"] = [{"name": "r", "from_step": 1, "after_seconds": 30}]
    evaluator = Evaluator(definition_from_doc(doc))
    for person_events in events.values():
        concerning = [
            e for e in person_events if evaluator.concerns(e.name, e.properties, e.context)
        ]
        assert evaluator(concerning) == evaluator(person_events)
