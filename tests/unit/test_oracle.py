"""The oracle's own tests, one or more per rule and report option of the README's funnel
semantics (PostHog's cases are in test_oracle_posthog). Each counting case is also checked
against the engine: a person counted by ``counted_entry`` of their entries."""

from __future__ import annotations

import math

import pytest

from services.aggregator.engine import PersonEvent, evaluate
from shared.funnel import US, Condition, totals_entries
from tests.funnel_cases import BASE, engine_counts, exclusion, funnel, person, persons
from tests.oracle import oracle_report

FAR = BASE + 10**6 * US
W = 10  # seconds, for short windows

CASES = {
    "ordered: other events may come between": (
        funnel("a", "b", "c"),
        persons(person("a", "x", "b", "c"), person("a", "c")),
        [2, 1, 1],
    ),
    "window inclusive, from step one": (
        funnel("a", "b", "c", window_seconds=60),
        persons(person("a@0", "b@59s", "c@60s"), person("a@0", "b@30s", "c@60.000001s")),
        [2, 2, 1],
    ),
    "a one-second window in any unit": (
        funnel("a", "b", window={"value": 1, "unit": "second"}),
        persons(person("a@0", "b@1s"), person("a@0", "b@1.5s")),
        [2, 1],
    ),
    "strict: any other event ends the entry": (
        funnel("a", "b", "c", order="strict"),
        persons(person("a", "b", "c"), person("a", "x", "b")),
        [2, 1, 1],
    ),
    "strict: an event tied with a step does not end it": (
        funnel("a", "b", "c", order="strict"),
        persons(person("a@0", "b@1s", "x@1s", "c@2s"), person("a@0", "x@0", "b@1s")),
        [2, 2, 1],
    ),
    "strict: an instant that takes no step ends it": (
        funnel("a", "b", "c", order="strict"),
        persons(person("a@0", "x@1s", "y@1s", "b@2s")),
        [1, 0, 0],
    ),
    "one event, one step": (funnel("a", "a", "a"), persons(person("a", "a")), [1, 1, 0]),
    "ties: A, A, B at one instant reach A -> B -> A (the issue's example)": (
        funnel("A", "B", "A"),
        persons(person("A@0", "A@0", "B@0"), person("B@0", "A@0", "A@0")),
        [2, 2, 2],
    ),
    "ties: step 1 and step 2 at one instant convert": (
        funnel("a", "b"),
        persons(person("b@5s", "a@5s")),
        [1, 1],
    ),
    "ties: a later tie still extends an entry as far as it can (T-5)": (
        funnel("A", "B", "A"),
        persons(person("A@0", "A@1s", "B@1s")),
        [1, 1, 1],
    ),
    "conditions": (
        funnel("a{v=3}", "b"),
        persons(person("a@0{v=3}", "b@1s"), person("a@0{v=1}", "b@1s")),
        [1, 1],
    ),
    "a disqualified furthest entry removes the person": (
        funnel("a", "b", "c", exclusions=[exclusion("x", 2, 3)]),
        persons(person("a", "b", "x", "c"), person("a")),
        [1, 0, 0],
    ),
    "a clean entry as far keeps the person": (
        funnel("a", "b", window_seconds=W, exclusions=[exclusion("x", 1, 2)]),
        persons(person("a@0", "x@1s", "b@2s", "a@20s", "b@21s")),
        [1, 1],
    ),
    "an exclusion tied with a step does not apply": (
        funnel("a", "b", exclusions=[exclusion("x", 1, 2)]),
        persons(person("a@0", "x@0", "b@1s", "x@1s")),
        [1, 1],
    ),
    "an exclusion after an unfinished step counts up to the window's end": (
        funnel("a", "b", window_seconds=W, exclusions=[exclusion("x", 1, 2)]),
        persons(person("a@0", "x@10s"), person("a@0", "x@10.5s")),
        [1, 0],
    ),
    "any order: an entry may start with any step": (
        funnel("a", "b", "c", order="any"),
        persons(person("c", "a", "b"), person("b", "b", "b")),
        [2, 1, 1],
    ),
    "any order: k distinct steps within one window from the entry's first event": (
        funnel("a", "b", "c", order="any", window_seconds=W),
        persons(person("a@0", "c@1s", "c@2s", "b@3s"), person("a@0", "c@1s", "b@11s")),
        [2, 2, 1],
    ),
    "any order: one event one step, as many steps as the events can do": (
        funnel("a", "*", "b", order="any"),
        persons(person("a", "b"), person("b", "a"), person("a", "a")),
        [3, 3, 0],
    ),
    "any order: an exclusion throws away the progress before it": (
        funnel("a", "b", "c", order="any", window_seconds=W, exclusions=[exclusion("x", 1, 3)]),
        persons(person("a@0", "b@1s", "x@2s"), person("a@0", "b@1s", "x@2s", "c@3s")),
        [1, 0, 0],
    ),
    "any order: progress whose window closed before the exclusion counts": (
        funnel("a", "b", "c", order="any", window_seconds=W, exclusions=[exclusion("x", 1, 3)]),
        persons(person("a@0", "b@1s", "x@20s")),
        [1, 1, 0],
    ),
    "any order: an exclusion tied with a step does not apply": (
        funnel("a", "b", "c", order="any", window_seconds=W, exclusions=[exclusion("x", 1, 3)]),
        persons(person("a@0", "b@1s", "x@1s", "c@2s")),
        [1, 1, 1],
    ),
    "any order: exclusion steps count distinct steps done": (
        funnel("a", "b", "c", order="any", exclusions=[exclusion("x", 2, 3)]),
        persons(person("a", "x", "b", "c"), person("a", "b", "x", "c")),
        [2, 2, 1],
    ),
    "optional steps: later steps may be reached without them": (
        funnel("a", "b?", "c"),
        persons(person("a", "c"), person("a", "b", "c"), person("a", "b")),
        [3, 2, 2],
    ),
    "optional steps: a count need not decrease": (
        funnel("a", "b", "c?", "d?", "e"),
        persons(person("a", "b", "d", "e"), person("a", "b", "c"), person("a", "b", "d")),
        [3, 3, 1, 2, 1],
    ),
    "optional steps: as many as the instant's events can do": (
        funnel("a", "b?", "c"),
        persons(person("a@0", "c@1s", "b@1s")),
        [1, 1, 1],
    ),
    "duplicates change nothing": (funnel("a", "b"), persons(person("a", "b")), [1, 1]),
}


@pytest.mark.parametrize("case", CASES)
def test_the_oracle_and_the_engine_count_each_rule_as_expected(case):
    f, events, expected = CASES[case]
    doubled = {p: evs + evs[::-1] for p, evs in events.items()}  # duplicates, reversed order
    assert oracle_report(f, doubled, BASE, FAR, FAR).persons == expected
    assert engine_counts(f, doubled) == expected


def test_any_permutation_of_same_instant_events_gives_the_same_result():
    f = funnel("A", "B", "A", "C")
    names = ["A", "A", "B", "C", "x"]
    results = set()
    for shift in range(len(names)):
        rotated = names[shift:] + names[:shift]
        events = [PersonEvent(f"{i}", BASE, n) for i, n in enumerate(rotated)]
        results.add(tuple(oracle_report(f, {"p": events}, BASE, FAR, FAR).persons))
    assert results == {(1, 1, 1, 1)}


def test_which_tied_event_takes_a_step_is_decided_by_event_id():
    f = funnel("a", "b", breakdowns=["ch"])
    events = [
        PersonEvent("e2", BASE, "a", {"ch": "late"}),
        PersonEvent("e1", BASE, "a", {"ch": "early"}),
    ]
    report = oracle_report(f, {"p": events}, BASE, FAR, FAR, breakdown="ch", attribution="step:1")
    assert report.groups == {"early": [1, 0]}
    [entry] = evaluate(f, events).entries
    assert entry.step_values == {"ch": ("early",)}


def test_the_counted_entry_reached_the_furthest_step_first_then_started_last():
    f = funnel("a", "b", "c", window_seconds=100)
    # a@0 and a@30 both reach step 2; a@0 gets there first: it is counted, not the faster one.
    events = persons(person("a@0", "b@10s", "a@30s", "b@35s"))
    timing = oracle_report(f, events, BASE, FAR, FAR).steps.timings[1]
    assert timing is not None
    assert timing.mean_s == 10
    # Both reach step 2 with the same event: the later start is counted (C-3).
    events = persons(person("a@0", "a@10s", "b@20s"))
    timing = oracle_report(f, events, BASE, FAR, FAR).steps.timings[1]
    assert timing is not None
    assert timing.mean_s == 10


def test_the_time_of_an_optional_step_skipped_is_measured_from_the_previous_step_done():
    f = funnel("a", "b?", "c")
    events = persons(person("a@0", "c@30s"), person("a@0", "b@10s", "c@30s"))
    timings = oracle_report(f, events, BASE, FAR, FAR).steps.timings
    assert timings[1] is not None
    assert (timings[1].mean_s, timings[2].mean_s if timings[2] else None) == (10, 25)


def test_date_range_selects_entries_whose_later_steps_count_after_it():
    f = funnel("a", "b", window_seconds=100)
    events = persons(person("a@10s", "b@60s"), person("a@60s"))
    assert oracle_report(f, events, BASE, BASE + 50 * US, FAR).persons == [1, 1]


def test_in_progress_until_the_window_closes_and_dropped_after():
    f = funnel("a", "b", window_seconds=100)
    events = persons(person("a@0"), person("a@500s"))
    report = oracle_report(f, events, BASE, FAR, BASE + 550 * US)
    assert report.in_progress == [1, 0]
    assert report.steps is not None
    assert report.steps.dropped == [1, 0]


def test_totals_count_every_clean_entry():
    f = funnel("a", "b", window_seconds=W)
    events = persons(person("a@0", "b@1s", "a@50s"))
    assert oracle_report(f, events, BASE, FAR, FAR, count="totals").persons == [2, 1]


def test_totals_in_any_order_count_attempts_not_every_start_within_one():
    f = funnel("a", "b", "c", order="any", window_seconds=W)
    # One attempt a, b, c; then a second one 20 s later; then c alone, inside its window.
    events = persons(person("a@0", "b@1s", "c@2s", "b@20s", "c@25s"))
    assert oracle_report(f, events, BASE, FAR, FAR, count="totals").persons == [2, 2, 1]
    entries = evaluate(f, events["P1"]).entries
    assert [e.reached for e in entries] == [3, 2, 1, 2, 1]
    assert [e.reached for e in totals_entries(f, entries)] == [3, 2]


def test_first_and_last_touch_are_the_first_and_last_non_empty_values_in_range():
    f = funnel("a", "b")
    events = persons(person("x@0{ch=noise}", "a@1s", "b@2s{ch=mail}", "a@3s{ch=ads}"))
    first = oracle_report(f, events, BASE, FAR, FAR, breakdown="ch")
    assert first.groups == {"mail": [1, 1]}
    last = oracle_report(f, events, BASE, FAR, FAR, breakdown="ch", attribution="last_touch")
    assert last.groups == {"ads": [1, 1]}
    none = oracle_report(f, persons(person("a", "b")), BASE, FAR, FAR, breakdown="ch")
    assert none.groups == {None: [1, 1]}


def test_step_attribution_leaves_out_persons_who_never_did_the_step():
    f = funnel("a", "b?", "c")
    events = persons(person("a{ch=x}", "b{ch=y}"), person("a", "b"), person("a{ch=z}", "c"))
    report = oracle_report(f, events, BASE, FAR, FAR, breakdown="ch", attribution="step:2")
    # P3 skipped step 2: no group. P2 did it without a value: the missing-value group.
    assert report.groups == {"y": [1, 1, 0], None: [1, 1, 0]}


def test_all_events_attribution_evaluates_the_funnel_over_each_values_events():
    f = funnel("a", "b", order="strict")
    events = persons(person("a{ch=s}", "x{ch=t}", "b{ch=s}", "a{ch=t}"))
    report = oracle_report(f, events, BASE, FAR, FAR, breakdown="ch", attribution="all_events")
    # The "t" event between does not interrupt the "s" funnel: it does not see it.
    assert report.groups == {"s": [1, 1], "t": [1, 0]}
    assert report.persons == [1, 0]


def test_an_ad_hoc_breakdown_reads_any_event_property():
    f = funnel("a", "b")  # no declared breakdowns
    events = persons(person("a{plan=pro}", "b"), person("a{plan=free}"))
    report = oracle_report(f, events, BASE, FAR, FAR, breakdown="plan")
    assert report.groups == {"pro": [1, 1], "free": [1, 0]}


def test_global_filters_hide_events_from_steps_exclusions_touches_and_strict_order():
    strict = funnel("a", "b", order="strict")
    events = persons(person("a{c=DE}", "x{c=FR}", "b{c=DE}"))
    de = [Condition("c", "eq", "DE")]
    assert oracle_report(strict, events, BASE, FAR, FAR).persons == [1, 0]
    assert oracle_report(strict, events, BASE, FAR, FAR, filters=de).persons == [1, 1]
    excluded = funnel("a", "b", exclusions=[exclusion("x", 1, 2)])
    assert oracle_report(excluded, events, BASE, FAR, FAR).persons == [0, 0]
    assert oracle_report(excluded, events, BASE, FAR, FAR, filters=de).persons == [1, 1]
    touched = persons(person("a@0{c=FR,ch=ads}", "a@1s{c=DE,ch=mail}"))
    report = oracle_report(excluded, touched, BASE, FAR, FAR, "uniques", "ch", filters=de)
    assert report.groups == {"mail": [1, 0]}


def _group(size: int, converted: int, value: str) -> dict[str, list[PersonEvent]]:
    return {
        f"{value}{i}": person(f"a{{ch={value}}}", *(["b"] if i < converted else []))
        for i in range(size)
    }


def test_each_group_has_a_wilson_interval_and_a_z_test_against_the_rest():
    f = funnel("a", "b")
    events = {**_group(100, 45, "s"), **_group(100, 30, "t"), **_group(4, 4, "u")}
    report = oracle_report(f, events, BASE, FAR, FAR, breakdown="ch")
    s = report.comparisons["s"]
    assert (s.entered, s.converted, s.rate) == (100, 45, 0.45)
    assert s.low == pytest.approx(0.3561, abs=1e-4)
    assert s.high == pytest.approx(0.5475, abs=1e-4)
    # Against the other 104 persons, 34 of whom converted.
    pooled = 79 / 204
    z = (0.45 - 34 / 104) / math.sqrt(pooled * (1 - pooled) * (1 / 100 + 1 / 104))
    assert s.z == pytest.approx(z)
    assert s.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))
    assert not s.significant  # p = 0.07
    t = report.comparisons["t"]
    assert t.significant  # 30 % against 49 of 104
    assert t.p_value is not None
    assert t.p_value < 0.05


def test_a_comparison_without_a_rest_or_with_one_rate_only_has_no_test():
    f = funnel("a", "b")
    alone = oracle_report(f, _group(10, 5, "s"), BASE, FAR, FAR, breakdown="ch").comparisons["s"]
    assert (alone.z, alone.p_value, alone.significant) == (None, None, False)
    both = {**_group(10, 10, "s"), **_group(10, 10, "t")}
    same = oracle_report(f, both, BASE, FAR, FAR, breakdown="ch").comparisons["s"]
    assert (same.rate, same.z, same.significant) == (1.0, None, False)
    assert same.low == pytest.approx(0.7225, abs=1e-4)
    assert same.high == pytest.approx(1.0)
