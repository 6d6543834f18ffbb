"""Definitions and the pure helpers the reports count with (shared/funnel.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.api.schemas import FunnelIn, FunnelPatch
from shared.funnel import (
    US,
    Condition,
    Entry,
    counted_entry,
    counted_key,
    definition_from_doc,
    for_report,
    totals_entries,
)

STEPS = [{"event": "a"}, {"event": "b"}]


@pytest.mark.parametrize(
    ("window", "seconds"),
    [
        ({"value": 1, "unit": "second"}, 1),
        ({"value": 30, "unit": "minute"}, 1800),
        ({"value": 6, "unit": "hour"}, 21_600),
        ({"value": 366, "unit": "day"}, 366 * 86_400),
        ({"value": 2, "unit": "week"}, 14 * 86_400),
    ],
)
def test_a_window_in_any_unit_is_its_seconds(window, seconds):
    doc = FunnelIn.model_validate({"name": "f", "steps": STEPS, "window": window}).model_dump()
    assert doc["window_seconds"] == seconds
    assert definition_from_doc(doc).window_s == seconds
    assert definition_from_doc({"steps": STEPS, "window": window}).window_s == seconds


@pytest.mark.parametrize(
    "change",
    [
        {"window": {"value": 367, "unit": "day"}},
        {"window": {"value": 0, "unit": "second"}},
        {"window": {"value": 1, "unit": "month"}},
        {"window": {"value": 1, "unit": "minute"}, "window_seconds": 30},
        {"window_seconds": 0},
        {"steps": [{"event": "a", "optional": True}, {"event": "b"}]},
        {"steps": [*STEPS, {"event": "c", "optional": True}], "order": "any"},
    ],
)
def test_windows_out_of_range_and_misplaced_optional_steps_are_refused(change):
    with pytest.raises(ValidationError):
        FunnelIn.model_validate({"name": "f", "steps": STEPS, **change})


def test_a_patched_window_replaces_the_stored_one_in_either_form():
    stored = FunnelIn.model_validate(
        {"name": "f", "steps": STEPS, "window": {"value": 30, "unit": "minute"}}
    ).model_dump()
    for patch, seconds in [
        ({"window_seconds": 60}, 60),
        ({"window": {"value": 2, "unit": "hour"}}, 7200),
    ]:
        change = FunnelPatch.model_validate(patch).model_dump(exclude_unset=True)
        assert FunnelIn.model_validate({**stored, **change}).window_seconds == seconds


def test_optional_steps_are_read_from_the_definition():
    f = definition_from_doc({"steps": [{"event": "a"}, {"event": "b", "optional": True}]})
    assert [s.optional for s in f.steps] == [False, True]


def entry(t0: float, *times: float | None, disqualified: bool = False) -> Entry:
    stamps = tuple(None if t is None else round(t * US) for t in (t0, *times))
    return Entry(round(t0 * US), stamps, disqualified)


def test_the_counted_entry_is_the_furthest_first_there_then_latest_started():
    early, late, short = entry(0, 10, 50), entry(20, 30, 40), entry(45)
    assert sorted([early, short, late], key=counted_key) == [late, early, short]
    assert counted_entry([early, late, short]) == late
    tie = entry(25, 30, 40)
    assert counted_entry([late, tie]) == tie


def test_a_disqualified_entry_further_than_every_clean_one_removes_the_person():
    assert counted_entry([entry(0, 1, disqualified=True), entry(5)]) is None
    assert counted_entry([entry(0, 1, disqualified=True), entry(5, 6)]) == entry(5, 6)
    assert counted_entry([]) is None


def test_entries_skipping_an_optional_step_keep_its_place():
    skipped = entry(0, None, 30)
    assert (skipped.reached, skipped.last_time) == (3, 30 * US)
    assert [skipped.done(k) for k in (1, 2, 3, 4)] == [True, False, True, False]
    assert [skipped.passed_at(k) for k in (1, 2, 3, 4)] == [0, 30 * US, 30 * US, None]
    assert [skipped.from_previous_us(k) for k in (1, 2, 3)] == [None, None, 30 * US]


def test_totals_count_every_clean_entry_and_any_order_attempts():
    ordered = definition_from_doc({"steps": STEPS, "window_seconds": 10})
    entries = [entry(0, 1), entry(2), entry(3, disqualified=True)]
    assert totals_entries(ordered, entries) == entries[:2]
    any_order = definition_from_doc({"steps": STEPS, "window_seconds": 10, "order": "any"})
    # A start within 10 s after one that got as far is part of that attempt.
    attempts = [entry(0, 1), entry(1), entry(5, 6), entry(10.5), entry(12, 13)]
    assert totals_entries(any_order, attempts) == [entry(0, 1), entry(10.5), entry(12, 13)]


def test_a_report_definition_adds_global_filters_and_an_ad_hoc_breakdown():
    f = definition_from_doc({"steps": STEPS, "breakdowns": ["ch"]})
    de = Condition("country", "eq", "DE")
    g = for_report(f, [de], "plan")
    assert (g.filters, g.breakdowns, g.steps) == ((de,), ("ch", "plan"), f.steps)
    assert for_report(f, breakdown="ch").breakdowns == ("ch",)
