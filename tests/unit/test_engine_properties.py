"""Property-based: the engine equals the oracle on random, shuffled, duplicated streams with
many same-instant events, for every order mode, optional steps and exclusions; and the
engine + report equal the oracle on what the report implements."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.aggregator.engine import (
    Evaluator,
    PersonEvent,
    evaluate,
    evaluate_by_value,
    lookback_us,
)
from services.api.reports.histogram import histogram, samples_s
from services.api.reports.python import Breakdown, Window, counted_entries
from services.api.reports.raw import entries_from_events, needs_events, report_from_events
from shared.funnel import (
    US,
    Condition,
    Entry,
    counted_entry,
    definition_from_doc,
    for_report,
    totals_entries,
)
from tests.oracle import counted, entries_of, oracle_histogram, oracle_report
from tests.oracle_journeys import journey_timers
from tests.oracle_paths import Path
from tests.pipeline import production_report

NAMES = ["a", "b", "c", "x"]


def examples(n: int) -> Any:
    """``n`` examples, unless a Hypothesis profile (HYPOTHESIS_PROFILE) says how many."""
    if os.environ.get("HYPOTHESIS_PROFILE"):
        return settings(deadline=None)
    return settings(max_examples=n, deadline=None)


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
def definitions(draw: Any, optional: bool = False, orders: tuple[str, ...] = ()) -> dict[str, Any]:
    n = draw(st.integers(2, 4))
    order = draw(st.sampled_from(orders or ("ordered", "strict", "any")))
    steps = [
        {"event": draw(st.sampled_from([*NAMES[:3], None])), "where": draw(conditions())}
        for _ in range(n)
    ]
    steps[0]["event"] = draw(st.sampled_from(NAMES[:3]))
    if optional and order != "any":
        for step in steps[1:]:
            step["optional"] = draw(st.booleans())
    exclusions = []
    if draw(st.booleans()):
        a = draw(st.integers(1, n - 1))
        exclusions.append({"event": "x", "from_step": a, "to_step": draw(st.integers(a + 1, n))})
    return {
        "steps": steps,
        "window_seconds": draw(st.sampled_from([60, 100])),
        "order": order,
        "exclusions": exclusions,
        "breakdowns": ["ch"],
    }


@st.composite
def streams(draw: Any, grid: int = 20) -> dict[str, list[PersonEvent]]:
    persons: dict[str, list[PersonEvent]] = {}
    for p in range(draw(st.integers(1, 4))):
        events = []
        for i in range(draw(st.integers(0, 12))):
            properties = {}
            if draw(st.booleans()):
                properties["ch"] = draw(st.sampled_from(["s", "t", 0, ""]))
            if draw(st.booleans()):
                properties["n"] = draw(st.integers(0, 2))
            # Coarse times (10 s grid) make ties and window edges common.
            ts = draw(st.integers(0, grid)) * 10 * US
            events.append(PersonEvent(f"p{p}e{i}", ts, draw(st.sampled_from(NAMES)), properties))
        # Delivery: shuffled, some events duplicated (a duplicate keeps its event id).
        delivered = draw(st.permutations(events))
        dups = draw(st.lists(st.sampled_from(events), max_size=3)) if events else []
        persons[f"p{p}"] = [*delivered, *dups]
    return persons


def as_entry(f: Any, path: Path) -> Entry:
    times = tuple(None if e is None else e.ts for e in path.events)
    values = {p: tuple(path.value(k, p) for k in range(path.reached)) for p in f.tracked_properties}
    return Entry(path.t0, times, path.disqualified, values)


@examples(300)
@given(doc=definitions(optional=True), events=streams(grid=12))
def test_entries_equal_the_oracles_for_every_order_optional_steps_and_exclusions(doc, events):
    f = definition_from_doc(doc)
    evaluator = Evaluator(f)
    for person_events in events.values():
        got = evaluator(person_events).entries
        assert list(got) == [as_entry(f, p) for p in entries_of(f, person_events)]


@examples(150)
@given(doc=definitions(optional=True), events=streams(grid=12), seed=st.randoms())
def test_any_permutation_of_same_instant_events_gives_the_same_entries(doc, events, seed):
    """Ties carry no order: shuffling, and renaming event ids so that their order within an
    instant changes, moves nothing but which of two equal events is the one recorded."""
    f = definition_from_doc(doc)
    for person_events in events.values():
        before = [(e.t0, e.step_times, e.disqualified) for e in evaluate(f, person_events).entries]
        renamed = [
            PersonEvent(f"r{seed.randrange(10**6):06d}{e.event_id}", e.ts, e.name, e.properties)
            for e in {e.event_id: e for e in person_events}.values()
        ]
        seed.shuffle(renamed)
        after = [(e.t0, e.step_times, e.disqualified) for e in evaluate(f, renamed).entries]
        assert after == before


@examples(200)
@given(
    doc=definitions(optional=True),
    events=streams(grid=12),
    filtered=st.sampled_from([None, "s", "t"]),
)
def test_counted_entries_and_global_filters_equal_the_oracles(doc, events, filtered):
    """``counted_entry`` (uniques: the counted entry on ties), ``totals_entries`` (totals:
    any-order attempts) and ``for_report`` (global filters)."""
    filters = [Condition("ch", "eq", filtered)] if filtered else []
    f = definition_from_doc(doc)
    evaluator = Evaluator(for_report(f, filters))
    uniques = counted(f, events, 0, 10**12, "uniques", filters)
    totals = counted(f, events, 0, 10**12, "totals", filters)
    for person, person_events in events.items():
        entries = evaluator(person_events).entries
        found = counted_entry(entries)
        assert ([found] if found else []) == [
            as_entry(f, p) for (who, _), p in uniques.items() if who == person
        ]
        assert totals_entries(f, entries) == [
            as_entry(f, p) for (who, _), p in sorted(totals.items()) if who == person
        ]


@examples(100)
@given(doc=definitions(optional=True), events=streams(grid=12))
def test_all_events_attribution_evaluates_each_values_events_alone(doc, events):
    f = definition_from_doc(doc)
    want = oracle_report(f, events, 0, 10**12, 0, breakdown="ch", attribution="all_events")
    got: dict[str | None, list[int]] = {}
    for person_events in events.values():
        for value, progress in evaluate_by_value(f, person_events, "ch").items():
            entry = counted_entry(progress.entries)
            if entry is not None:
                steps = got.setdefault(value, [0] * len(f.steps))
                for k in range(len(f.steps)):
                    steps[k] += entry.done(k + 1)
    assert got == want.groups


ATTRIBUTIONS = [None, "first_touch", "last_touch", "step:1", "step:2", "step:3", "all_events"]


@examples(300)
@given(
    doc=definitions(optional=True),
    events=streams(),
    bounds=st.tuples(st.integers(0, 22), st.integers(0, 22)),
    now=st.integers(0, 40),
    count=st.sampled_from(["uniques", "totals"]),
    attribution=st.sampled_from(ATTRIBUTIONS),
    prop=st.sampled_from(["ch", "n"]),  # declared, or ad hoc
    filtered=st.sampled_from([None, "s", "t"]),
)
def test_engine_and_report_equal_the_oracle(
    doc, events, bounds, now, count, attribution, prop, filtered
):
    """Every order, optional steps, count mode and attribution, declared and ad-hoc
    breakdowns, global filters: step counts, in progress, dropped, times, groups and their
    comparisons. Reports the stored entries can answer go through them; the others are
    evaluated from raw events, as the API does."""
    f = definition_from_doc(doc)
    filters = (Condition("ch", "eq", filtered),) if filtered else ()
    start, end = sorted(b * 10 * US for b in bounds)
    window = Window(start, end, now * 10 * US)
    breakdown = None
    if attribution is not None:
        kind, _, step = attribution.partition(":")
        step_k = min(int(step or 1), len(f.steps))
        breakdown = Breakdown(prop, kind if not step else "step", step_k, limit=100)
        attribution = f"step:{step_k}" if step else kind
    expected = oracle_report(
        f,
        events,
        window.start,
        window.end,
        window.now,
        count,
        prop if breakdown else None,
        attribution or "first_touch",
        filters,
    )
    if needs_events(f, breakdown, filters):
        got = report_from_events(f, events, window, count, breakdown, filters)
    else:
        got = production_report(f, events, window, count, breakdown)
    assert_steps_equal(got.steps, expected.steps)
    if breakdown is not None:
        assert {g.value for g in got.groups} == set(expected.group_steps)
        for g in got.groups:
            assert_steps_equal(g.steps, expected.group_steps[g.value])
            want, have = expected.comparisons[g.value], g.comparison
            assert have is not None
            assert (have.entered, have.converted) == (want.entered, want.converted)
            for a, b in [(have.low, want.low), (have.high, want.high), (have.z, want.z)]:
                assert (a is None) == (b is None)
                assert a is None or a == pytest.approx(b, abs=1e-9)
            assert have.significant == want.significant


def assert_steps_equal(got: Any, want: Any) -> None:
    assert [s.persons for s in got] == want.persons
    assert [s.in_progress for s in got] == [*want.in_progress[:-1], 0]
    assert [s.dropped for s in got] == [*want.dropped[:-1], 0]
    for s, timing in zip(got, want.timings, strict=True):
        have = s.time_from_previous
        assert (have is None) == (timing is None)
        if have is not None:
            assert (have.median_s, have.p90_s, have.mean_s) == pytest.approx(
                (timing.median_s, timing.p90_s, timing.mean_s)
            )


@examples(200)
@given(doc=definitions(optional=True), events=streams())
def test_events_that_concern_no_rule_change_nothing(doc, events):
    """The aggregator skips a funnel for persons whose new events do not concern it: leaving
    those events out must give the very same entries, touches and timers."""
    doc["remarketing"] = [{"name": "r", "from_step": 2, "after_seconds": 30}]
    evaluator = Evaluator(definition_from_doc(doc))
    for person_events in events.values():
        concerning = [
            e for e in person_events if evaluator.concerns(e.name, e.properties, e.context)
        ]
        assert evaluator(concerning) == evaluator(person_events)


@examples(200)
@given(
    doc=definitions(optional=True),
    events=streams(),
    count=st.sampled_from(["uniques", "totals"]),
    steps=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    bins=st.sampled_from([None, 1, 3, (0.0, 20.0, 50.0), (5.0, 7.5, 30.0, 100.0)]),
    filtered=st.sampled_from([None, "s"]),
)
def test_time_to_convert_equals_the_oracles_histogram(doc, events, count, steps, bins, filtered):
    f = definition_from_doc(doc)
    a, b = min(steps), max(steps)
    b = min(max(b, a + 1), len(f.steps))
    a = min(a, b - 1)
    filters = (Condition("ch", "eq", filtered),) if filtered else ()
    window = Window(0, 10**12, 10**12)
    entries, _ = entries_from_events(f, events, window, filters)
    got = histogram(samples_s(counted_entries(f, entries, count), a, b), bins)
    want, mean = oracle_histogram(f, events, 0, 10**12, a, b, bins, count, filters)
    assert [(x.start_s, x.units) for x in got.bins] == [(float(s), n) for s, n in want]
    assert got.mean_s == pytest.approx(mean)


TIMER_RULES = [
    {"name": "once", "after_seconds": 50},
    {"name": "again", "after_seconds": 30, "repeat_every_seconds": 40, "until_seconds": 150},
]


@st.composite
def with_rules(draw: Any, orders: tuple[str, ...] = ()) -> dict[str, Any]:
    """A random funnel (``definitions``) with one or two re-marketing rules."""
    doc = draw(definitions(optional=True, orders=orders))
    n = len(doc["steps"])
    rules = []
    for rule in draw(st.lists(st.sampled_from(TIMER_RULES), min_size=1, max_size=2, unique_by=str)):
        start = draw(st.integers(1, n - 1))
        rules.append({**rule, "from_step": start, "goal_step": draw(st.integers(start + 1, n))})
    return {**doc, "remarketing": rules}


@examples(200)
@given(doc=with_rules(), events=streams())
def test_timers_equal_the_oracles_one_set_per_any_order_journey(doc, events):
    f = definition_from_doc(doc)
    got = {
        (p, t.rule, t.entry_t0, t.occurrence, t.due_us)
        for p, evs in events.items()
        for t in evaluate(f, evs).timers
        if not t.cancelled
    }
    assert got == journey_timers(f, events)


@examples(200)
@given(doc=with_rules(orders=("any", "ordered")), events=streams(grid=60), since=st.integers(0, 60))
def test_an_evaluation_from_a_bound_equals_the_whole_history_from_there(doc, events, since):
    """What a batch or a backfill does: evaluate the events from one lookback before a bound
    and keep what starts from it; that is what evaluating the whole history keeps there."""
    f = definition_from_doc(doc)
    evaluator = Evaluator(f)
    bound = since * 10 * US
    read_from = bound - lookback_us(f)
    for person_events in events.values():
        whole = evaluator(person_events)
        part = evaluator([e for e in person_events if e.ts >= read_from], bound)
        assert part.entries == tuple(e for e in whole.entries if e.t0 >= bound)
        assert part.touches == tuple(t for t in whole.touches if t.ts >= bound)
        assert part.timers == tuple(t for t in whole.timers if t.entry_t0 >= bound)
