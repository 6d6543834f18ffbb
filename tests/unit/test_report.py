"""Report counting rules: uniques, totals, disqualification, in progress, breakdowns, timing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.api.reports.python import Breakdown, Window, funnel_report
from shared.funnel import US, Entry, Touch
from tests.helpers import funnel

F3 = funnel("a", "b", "c", window_seconds=100, value_property="amount")
CLOSED = Window(0, 10_000 * US, now=10_000 * US)


def entry(*times_s: float, disqualified: bool = False, **values) -> Entry:
    return Entry(
        round(times_s[0] * US),
        tuple(round(t * US) for t in times_s),
        disqualified,
        {k: tuple(v) for k, v in values.items()},
    )


def persons(report) -> list[int]:
    return [s.persons for s in report.steps]


def test_uniques_count_a_person_once_at_their_furthest_entry():
    data = {"p": [entry(0, 1), entry(10, 11, 12)], "q": [entry(5)]}
    assert persons(funnel_report(F3, data, CLOSED)) == [2, 1, 1]


def test_totals_count_every_clean_entry():
    data = {"p": [entry(0, 1), entry(10, 11, 12)], "q": [entry(5)]}
    assert persons(funnel_report(F3, data, CLOSED, "totals")) == [3, 2, 1]


def test_a_person_whose_furthest_entry_is_disqualified_is_not_counted():
    data = {"p": [entry(0, 1, 2, disqualified=True), entry(10, 11)]}
    assert persons(funnel_report(F3, data, CLOSED)) == [0, 0, 0]


def test_a_clean_entry_as_far_as_the_disqualified_one_keeps_the_person():
    data = {"p": [entry(0, 1, 2, disqualified=True), entry(10, 11, 12)]}
    assert persons(funnel_report(F3, data, CLOSED)) == [1, 1, 1]


def test_conversion_and_drop_off():
    data = {f"p{i}": [entry(0, 1)] for i in range(4)} | {"q": [entry(0, 1, 2)], "r": [entry(0)]}
    steps = funnel_report(F3, data, CLOSED).steps
    assert [s.persons for s in steps] == [6, 5, 1]
    assert steps[1].conversion_from_previous == pytest.approx(5 / 6)
    assert steps[2].conversion_from_start == pytest.approx(1 / 6)
    assert [s.dropped for s in steps] == [1, 4, 0]
    assert steps[1].drop_off_rate == pytest.approx(4 / 5)


def test_open_windows_are_in_progress_not_dropped():
    data = {"p": [entry(0, 1)], "q": [entry(9_950)]}
    steps = funnel_report(F3, data, CLOSED).steps
    assert (steps[0].dropped, steps[0].in_progress) == (0, 1)
    assert (steps[1].dropped, steps[1].in_progress) == (1, 0)


def test_time_to_convert_uses_the_counted_path():
    data = {
        "p": [entry(0, 10, 20), entry(50, 51)],
        "q": [entry(0, 30)],
        "r": [entry(0, 20, 25)],
    }
    timing = funnel_report(F3, data, CLOSED).steps[1].time_from_previous
    assert (timing.median_s, timing.mean_s) == (20, 20)
    assert timing.p90_s == pytest.approx(28)


def test_on_a_tie_the_entry_that_reached_the_furthest_step_first_is_counted():
    data = {"p": [entry(0, 10), entry(30, 31)]}
    timing = funnel_report(F3, data, CLOSED).steps[1].time_from_previous
    assert timing.median_s == 10
    # Reached with the same event: the one that started last.
    data = {"p": [entry(0, 31), entry(30, 31)]}
    assert funnel_report(F3, data, CLOSED).steps[1].time_from_previous.median_s == 1


def test_values_are_summed_per_step():
    data = {
        "p": [entry(0, 1, 2, amount=[None, None, "10"])],
        "q": [entry(0, 1, 2, amount=[None, None, "30"])],
    }
    last = funnel_report(F3, data, CLOSED).steps[2]
    assert (last.value_sum, last.value_average) == (40, 20)


def test_first_and_last_touch_breakdowns_with_missing_as_its_own_group():
    f = funnel("a", "b", breakdowns=["ch"])
    data = {"p": [entry(1, 2)], "q": [entry(1)], "r": [entry(1)]}
    touches = {
        "p": [Touch(1 * US, 0, {"ch": "ads"}), Touch(2 * US, 1, {"ch": "mail"})],
        "q": [Touch(1 * US, 0, {"ch": "ads"})],
    }
    first = funnel_report(f, data, CLOSED, breakdown=Breakdown("ch"), touches_by_person=touches)
    assert [(g.value, [s.persons for s in g.steps]) for g in first.groups] == [
        ("ads", [2, 1]),
        (None, [1, 0]),
    ]
    last = funnel_report(
        f, data, CLOSED, breakdown=Breakdown("ch", "last_touch"), touches_by_person=touches
    )
    assert [(g.value, g.steps[0].persons) for g in last.groups] == [
        ("ads", 1),
        ("mail", 1),
        (None, 1),
    ]


def test_touches_outside_the_range_do_not_attribute():
    f = funnel("a", "b", breakdowns=["ch"])
    data = {"p": [entry(100, 101)]}
    touches = {"p": [Touch(1 * US, 0, {"ch": "old"}), Touch(101 * US, 1, {"ch": "new"})]}
    window = Window(50 * US, 200 * US, 10_000 * US)
    report = funnel_report(f, data, window, breakdown=Breakdown("ch"), touches_by_person=touches)
    assert [g.value for g in report.groups] == ["new"]


def test_small_groups_beyond_the_limit_merge_into_other():
    f = funnel("a", "b", breakdowns=["ch"])
    data = {f"p{i}": [entry(1)] for i in range(5)}
    touches = {f"p{i}": [Touch(1 * US, 0, {"ch": "big" if i < 3 else f"s{i}"})] for i in range(5)}
    report = funnel_report(
        f, data, CLOSED, breakdown=Breakdown("ch", limit=1), touches_by_person=touches
    )
    assert [(g.value, g.steps[0].persons) for g in report.groups] == [("big", 3), ("(other)", 2)]


def test_step_attribution_reads_the_counted_entrys_step_event():
    """q never reached step 2: in no group; r got there without a value: the missing group."""
    f = funnel("a", "b", breakdowns=["ch"])
    data = {
        "p": [entry(1, 2, ch=["x", "y"])],
        "q": [entry(1, ch=["x"])],
        "r": [entry(1, 2, ch=["x", None])],
    }
    report = funnel_report(f, data, CLOSED, breakdown=Breakdown("ch", "step", step=2))
    assert [(g.value, g.steps[0].persons) for g in report.groups] == [("y", 1), (None, 1)]
    assert report.steps[0].persons == 3


def test_an_optional_step_counts_the_persons_who_did_it():
    f = funnel("a", "b", "c", window_seconds=100)
    f = replace(f, steps=(f.steps[0], replace(f.steps[1], optional=True), f.steps[2]))
    skipped = Entry(0, (0, None, 5 * US))
    data = {"p": [skipped], "q": [entry(0, 1, 3)], "r": [entry(0, 2)]}
    steps = funnel_report(f, data, CLOSED).steps
    assert [s.persons for s in steps] == [3, 2, 2]
    # From the previous step done: p 5 s from step 1, q 2 s from step 2.
    assert steps[2].time_from_previous.mean_s == pytest.approx(3.5)


def test_totals_in_any_order_count_attempts_not_every_instant():
    f = replace(funnel("a", "b", window_seconds=100), order="any")
    # Opened at 0 and at 1 (b at 1 starts one too); the second is part of the first.
    data = {"p": [entry(0, 1), entry(1)]}
    assert persons(funnel_report(f, data, CLOSED, "totals")) == [1, 1]


def test_a_group_is_compared_with_the_rest():
    f = funnel("a", "b", breakdowns=["ch"])
    data = {f"p{i}": [entry(1, 2) if i < 40 else entry(1)] for i in range(100)}
    touches = {f"p{i}": [Touch(1 * US, 0, {"ch": "x" if i < 50 else "y"})] for i in range(100)}
    report = funnel_report(f, data, CLOSED, breakdown=Breakdown("ch"), touches_by_person=touches)
    x = next(g for g in report.groups if g.value == "x").comparison
    assert (x.entered, x.converted, x.rest_entered, x.rest_converted) == (50, 40, 50, 0)
    assert x.low < 0.8 < x.high
    assert x.significant
