"""The bounds layout (shared/bounds.py) against the rules it stores: for every
range of random persons' entries and touches, the bounds pick exactly the counted entry
(shared.funnel.counted_entry over the entries in range) and the first and last touch."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.aggregator.engine import Evaluator
from services.api.reports.python import Breakdown, Window, attribute
from shared.bounds import entry_bounds, touch_bounds, touch_neighbours
from shared.funnel import Entry, Touch, counted_entry, definition_from_doc
from tests.unit.test_engine_properties import definitions, streams


@st.composite
def persons(draw: st.DrawFn) -> list[Entry]:
    """Up to 7 entries at distinct small instants; reach 1-4, steps may tie in time, an
    optional step may be skipped, some entries are disqualified."""
    starts = draw(st.lists(st.integers(0, 30), min_size=1, max_size=7, unique=True))
    entries = []
    for t0 in starts:
        times: list[int | None] = [t0]
        t = t0
        for _ in range(draw(st.integers(0, 3))):
            t += draw(st.integers(0, 3))
            times.append(t)
        if len(times) > 2 and draw(st.booleans()):
            times[1] = None  # a skipped optional step
        entries.append(Entry(t0, tuple(times), disqualified=draw(st.integers(0, 4)) == 0))
    return entries


def ranges(instants: list[int]) -> list[tuple[int, int]]:
    """Every range whose ends fall on, just after or around the given instants."""
    points = sorted({p + d for p in instants for d in (0, 1)} | {min(instants) - 1})
    return [(lo, hi) for lo in points for hi in points if lo < hi]


@given(persons())
def test_bounds_pick_the_counted_entry_in_every_range(entries):
    bounds = entry_bounds(entries)
    for lo, hi in ranges([e.t0 for e in entries]):
        expected = counted_entry(e for e in entries if lo <= e.t0 < hi)
        found = [e for e, b in zip(entries, bounds, strict=True) if b.counted_in(e.t0, lo, hi)]
        assert found == ([] if expected is None else [expected]), (lo, hi)


def test_a_disqualified_entry_that_got_further_hides_the_person_while_in_range():
    clean, bad = Entry(10, (10, 11)), Entry(20, (20, 21, 22), disqualified=True)
    b_clean, b_bad = entry_bounds([clean, bad])
    assert (b_clean.left, b_clean.right) == (None, 20)
    assert b_clean.counted_in(10, 0, 20)
    assert not b_clean.counted_in(10, 0, 21)
    assert not any(b_bad.counted_in(20, lo, 30) for lo in range(21))


def test_entries_starting_at_one_instant_are_refused():
    with pytest.raises(ValueError, match="distinct"):
        entry_bounds([Entry(5, (5,)), Entry(5, (5, 6))])


@st.composite
def touches(draw: st.DrawFn) -> list[Touch]:
    """Touches at small instants (ties with distinct seq), some without the value."""
    found = []
    for ts in draw(st.lists(st.integers(0, 20), min_size=1, max_size=8)):
        value = draw(st.sampled_from(["a", "b", None]))
        found.append(Touch(ts, 0, {"channel": value}))
    # seq numbers the touches of one instant, as the engine does.
    seqs: dict[int, int] = {}
    numbered = []
    for t in found:
        seqs[t.ts] = seqs.get(t.ts, -1) + 1
        numbered.append(Touch(t.ts, seqs[t.ts], t.values))
    return draw(st.permutations(numbered))


@given(touches())
def test_touch_bounds_pick_the_first_and_last_touch_in_every_range(found):
    bounds = touch_bounds(found, "channel")
    for lo, hi in ranges([t.ts for t in found]):
        window = Window(lo, hi, 0)
        for attribution, pick in (("first_touch", "first_in"), ("last_touch", "last_in")):
            expected = attribute(Breakdown("channel", attribution), Entry(0, (0,)), found, window)
            chosen = [b.touch for b in bounds if getattr(b, pick)(lo, hi)]
            assert len(chosen) == (expected is not None), (lo, hi, attribution)
            assert [t.values["channel"] for t in chosen] == ([expected] if expected else [])


@given(definitions(optional=True), streams())
def test_bounds_of_the_engines_progress_pick_what_the_report_rules_pick(doc, persons):
    # Entries and touches as the engine derives them from shuffled, duplicated deliveries:
    # every order, optional steps, exclusions (disqualified entries), same-instant events.
    evaluate = Evaluator(definition_from_doc(doc))
    for events in persons.values():
        progress = evaluate(events)
        entries, touches = list(progress.entries), list(progress.touches)
        bounds = entry_bounds(entries)
        neighbours = touch_bounds(touches, "ch")
        instants = [e.t0 for e in entries] + [t.ts for t in touches] or [0]
        for lo, hi in ranges(instants):
            expected = counted_entry(e for e in entries if lo <= e.t0 < hi)
            found = [e for e, b in zip(entries, bounds, strict=True) if b.counted_in(e.t0, lo, hi)]
            assert found == ([] if expected is None else [expected]), (lo, hi)
            first = attribute(Breakdown("ch"), Entry(0, (0,)), touches, Window(lo, hi, 0))
            chosen = [b.touch.values["ch"] for b in neighbours if b.first_in(lo, hi)]
            assert chosen == ([] if first is None else [first]), (lo, hi)


def test_touch_neighbours_are_the_touch_bounds_of_each_property():
    touches = [
        Touch(5, 0, {"c": "a", "s": None}),
        Touch(1, 1, {"c": "b", "s": "x"}),
        Touch(5, 1, {"s": "y"}),
        Touch(3, 0, {"c": None}),
    ]
    found = touch_neighbours(touches)
    assert found == [{"c": [1, None]}, {"c": [None, 5], "s": [None, 5]}, {"s": [1, None]}, {}]
    for name in ("c", "s"):
        for b in touch_bounds(touches, name):
            assert found[touches.index(b.touch)][name] == [b.previous, b.next]
