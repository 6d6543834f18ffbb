"""The oracle's own tests, one per rule of BRIEF section 2; the engine must agree on each."""

from __future__ import annotations

import pytest

from services.api.reports.python import Window
from shared.funnel import US
from tests.helpers import ev, funnel
from tests.oracle import oracle_report
from tests.pipeline import production_report

FAR = 10**6 * US
ALL = Window(0, FAR, FAR)

CASES = {
    "ordered with noise between": (
        funnel("a", "b", "c"),
        {"p": [ev("a", 0), ev("x", 1), ev("b", 2), ev("c", 3)], "q": [ev("a", 0), ev("c", 1)]},
        [2, 1, 1],
    ),
    "window inclusive from step one": (
        funnel("a", "b", "c", window_seconds=60),
        {"p": [ev("a", 0), ev("b", 59), ev("c", 60)], "q": [ev("a", 0), ev("b", 30), ev("c", 61)]},
        [2, 2, 1],
    ),
    "strict ends on any other event": (
        funnel("a", "b", "c", order="strict"),
        {"p": [ev("a", 0), ev("b", 1), ev("c", 2)], "q": [ev("a", 0), ev("x", 1), ev("b", 2)]},
        [2, 1, 1],
    ),
    "any order, distinct steps": (
        funnel("a", "b", "c", order="any"),
        {"p": [ev("a", 0), ev("c", 1), ev("b", 2)], "q": [ev("a", 0), ev("c", 1), ev("c", 2)]},
        [2, 2, 1],
    ),
    "one event one step": (
        funnel("a", "a", "a"),
        {"p": [ev("a", 0), ev("a", 1)]},
        [1, 1, 0],
    ),
    "ties taken in step order": (
        funnel("a", "b"),
        {"p": [ev("b", 5), ev("a", 5)]},
        [1, 1],
    ),
    "conditions": (
        funnel({"event": "a", "where": [{"property": "v", "op": "gt", "value": 2}]}, "b"),
        {"p": [ev("a", 0, v=3), ev("b", 1)], "q": [ev("a", 0, v="1"), ev("b", 1)]},
        [1, 1],
    ),
    "disqualified furthest entry removes the person": (
        funnel("a", "b", "c", exclusions=[{"event": "x", "from_step": 2, "to_step": 3}]),
        {"p": [ev("a", 0), ev("b", 1), ev("x", 2), ev("c", 3)], "q": [ev("a", 0)]},
        [1, 0, 0],
    ),
    "a clean entry as far keeps the person": (
        funnel("a", "b", exclusions=[{"event": "x"}], window_seconds=10),
        {"p": [ev("a", 0), ev("x", 1), ev("b", 2), ev("a", 20), ev("b", 21)]},
        [1, 1],
    ),
    "exclusion tied with a step does not apply": (
        funnel("a", "b", exclusions=[{"event": "x"}]),
        {"p": [ev("a", 0), ev("x", 0), ev("b", 1), ev("x", 1)]},
        [1, 1],
    ),
    "duplicates change nothing": (
        funnel("a", "b"),
        {"p": [ev("a", 0), ev("b", 1)]},
        [1, 1],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_oracle_and_engine_agree_on_each_rule(case):
    definition, events, expected = CASES[case]
    doubled = {p: evs + evs[::-1] for p, evs in events.items()}  # duplicates and reversed order
    oracle = oracle_report(definition, doubled, ALL.start, ALL.end, ALL.now)
    assert oracle.persons == expected
    production = production_report(definition, doubled, ALL)
    assert [s.persons for s in production.steps] == expected


def test_date_range_selects_entries_whose_later_steps_count_after_it():
    f = funnel("a", "b", window_seconds=100)
    events = {"p": [ev("a", 10), ev("b", 60)], "q": [ev("a", 60)]}
    window = Window(0, 50 * US, FAR)
    assert oracle_report(f, events, window.start, window.end, window.now).persons == [1, 1]
    assert [s.persons for s in production_report(f, events, window).steps] == [1, 1]


def test_in_progress_until_the_window_closes():
    f = funnel("a", "b", window_seconds=100)
    events = {"p": [ev("a", 0)], "q": [ev("a", 500)]}
    now = 550 * US
    oracle = oracle_report(f, events, 0, FAR, now)
    assert oracle.in_progress == [1, 0]
    assert [s.in_progress for s in production_report(f, events, Window(0, FAR, now)).steps] == [
        1,
        0,
    ]


def test_totals_count_every_clean_entry():
    f = funnel("a", "b", window_seconds=10)
    events = {"p": [ev("a", 0), ev("b", 1), ev("a", 50)]}
    assert oracle_report(f, events, 0, FAR, FAR, count="totals").persons == [2, 1]
    assert [s.persons for s in production_report(f, events, ALL, "totals").steps] == [2, 1]


def test_first_touch_is_the_first_non_empty_value_in_range():
    from services.api.reports.python import Breakdown

    f = funnel("a", "b", breakdowns=["ch"])
    events = {
        "p": [ev("x", 0, ch="noise"), ev("a", 1), ev("b", 2, ch="mail"), ev("a", 3, ch="ads")]
    }
    oracle = oracle_report(f, events, 0, FAR, FAR, breakdown="ch")
    assert oracle.groups == {"mail": [1, 1]}
    production = production_report(f, events, ALL, breakdown=Breakdown("ch"))
    assert [(g.value, [s.persons for s in g.steps]) for g in production.groups] == [
        ("mail", [1, 1])
    ]
    last = oracle_report(f, events, 0, FAR, FAR, breakdown="ch", attribution="last_touch")
    assert last.groups == {"ads": [1, 1]}
