"""The funnel engine against each rule of BRIEF section 2."""

from __future__ import annotations

from services.aggregator.engine import Evaluator, PersonEvent, evaluate, evaluate_by_value
from shared.funnel import US
from tests.helpers import DAY, ev, funnel


def reached(definition, events):
    return [e.reached for e in evaluate(definition, events).entries]


def test_each_step_one_event_opens_one_entry_and_advances_in_order():
    f = funnel("a", "b", "c")
    assert reached(f, [ev("a", 0), ev("x", 1), ev("b", 2), ev("c", 3)]) == [3]


def test_window_is_inclusive_and_measured_from_step_one():
    f = funnel("a", "b", "c", window_seconds=100)
    assert reached(f, [ev("a", 0), ev("b", 90), ev("c", 100)]) == [3]
    assert reached(f, [ev("a", 0), ev("b", 90), ev("c", 100.000001)]) == [2]


def test_sub_second_precision_is_kept():
    f = funnel("a", "b", window_seconds=60)
    [entry] = evaluate(f, [ev("a", 0.25), ev("b", 60.25)]).entries
    assert entry.step_times == (250_000, 60_250_000)


def test_every_step_one_event_opens_its_own_entry():
    f = funnel("a", "b", window_seconds=10)
    assert reached(f, [ev("a", 0), ev("a", 20), ev("b", 25)]) == [1, 2]


def test_one_event_moves_an_entry_by_one_step_only():
    f = funnel("a", "a")
    assert reached(f, [ev("a", 0)]) == [1]
    assert reached(f, [ev("a", 0), ev("a", 1)]) == [2, 1]


def test_same_instant_events_take_steps_as_far_as_they_can():
    f = funnel("a", "b")
    # b is listed first but happens at the same instant as a: they convert.
    assert reached(f, [ev("b", 5), ev("a", 5)]) == [2]
    g = funnel("A", "B", "A")
    assert reached(g, [ev("A", 0), ev("A", 0), ev("B", 0)]) == [3]
    assert reached(g, [ev("A", 0), ev("A", 1), ev("B", 1)]) == [3, 2]


def test_the_events_of_one_instant_open_one_entry():
    f = funnel("a", "a")
    assert reached(f, [ev("a", 0), ev("a", 0)]) == [2]
    assert [e.t0 for e in evaluate(f, [ev("a", 0), ev("a", 0), ev("a", 1)]).entries] == [0, US]


def test_of_tied_events_the_first_by_event_id_takes_the_step():
    f = funnel("a", "b", breakdowns=["ch"])
    events = [PersonEvent("e2", 0, "a", {"ch": "two"}), PersonEvent("e1", 0, "a", {"ch": "one"})]
    [entry] = evaluate(f, events).entries
    assert entry.step_values == {"ch": ("one",)}


def test_ordered_mode_lets_other_events_come_between():
    f = funnel("a", "b", "c")
    assert reached(f, [ev("a", 0), ev("c", 1), ev("b", 2), ev("c", 3)]) == [3]


def test_strict_mode_ends_the_entry_on_any_other_event():
    f = funnel("a", "b", "c", order="strict")
    assert reached(f, [ev("a", 0), ev("b", 1), ev("x", 2), ev("c", 3)]) == [2]
    assert reached(f, [ev("a", 0), ev("b", 1), ev("c", 3)]) == [3]


def test_strict_mode_is_not_ended_by_an_event_tied_with_a_step():
    f = funnel("a", "b", "c", order="strict")
    assert reached(f, [ev("a", 0), ev("x", 0), ev("b", 1), ev("x", 1), ev("c", 2)]) == [3]
    assert reached(f, [ev("a", 0), ev("x", 1), ev("y", 1), ev("b", 2)]) == [1]


def test_any_order_opens_an_entry_at_each_instant_with_a_step_event():
    f = funnel("a", "b", "c", order="any", window_seconds=10)
    assert reached(f, [ev("a", 0), ev("c", 1), ev("c", 2), ev("b", 3)]) == [3, 2, 2, 1]
    assert reached(f, [ev("a", 0), ev("c", 1), ev("b", 11)]) == [2, 2, 1]
    assert reached(f, [ev("b", 0), ev("x", 1), ev("a", 2)]) == [2, 1]


def test_any_order_times_are_when_each_count_of_distinct_steps_was_reached():
    f = funnel("a", "b", "c", order="any", window_seconds=10, breakdowns=["ch"])
    entry = evaluate(f, [ev("c", 0, ch="x"), ev("c", 1), ev("a", 4, ch="y")]).entries[0]
    assert entry.step_times == (0, 4 * US)
    assert entry.step_values == {"ch": ("x", "y")}


def test_any_order_leaves_out_entries_an_exclusion_threw_away():
    f = funnel("a", "b", "c", order="any", window_seconds=10, exclusions=[{"event": "x"}])
    events = [ev("a", 0), ev("b", 1), ev("x", 2), ev("c", 3)]
    assert [(e.t0, e.reached, e.disqualified) for e in evaluate(f, events).entries] == [
        (3 * US, 1, False)
    ]


def test_optional_steps_skipped_are_none_in_the_entry():
    f = funnel("a", {"event": "b", "optional": True}, "c", breakdowns=["ch"])
    [entry] = evaluate(f, [ev("a", 0, ch="s"), ev("c", 5, ch="t")]).entries
    assert entry.step_times == (0, None, 5 * US)
    assert entry.step_values == {"ch": ("s", None, "t")}
    assert (entry.reached, entry.done(2), entry.done(3)) == (3, False, True)
    assert entry.from_previous_us(3) == 5 * US
    [partial] = evaluate(f, [ev("a", 0), ev("b", 5)]).entries
    assert partial.step_times == (0, 5 * US)


def test_exclusions_count_from_when_an_entry_passed_an_optional_step():
    f = funnel(
        "a",
        {"event": "b", "optional": True},
        "c",
        "d",
        exclusions=[{"event": "x", "from_step": 2, "to_step": 4}],
    )
    # Skipping b, the entry passes step 2 when it does c.
    [before] = evaluate(f, [ev("a", 0), ev("x", 1), ev("c", 2), ev("d", 3)]).entries
    [after] = evaluate(f, [ev("a", 0), ev("c", 2), ev("x", 2.5), ev("d", 3)]).entries
    assert (before.disqualified, after.disqualified) == (False, True)


def test_global_filters_hide_events_from_the_funnel():
    f = funnel("a", "b", order="strict", filters=[{"property": "c", "value": "DE"}])
    events = [ev("a", 0, c="DE"), ev("x", 1, c="FR"), ev("b", 2, c="DE")]
    assert reached(f, events) == [2]
    assert not Evaluator(f).concerns("x", {"c": "FR"}, {})


def test_all_events_attribution_evaluates_each_values_events_alone():
    f = funnel("a", "b")
    events = [ev("a", 0, ch="s"), ev("a", 1, ch="t"), ev("b", 2, ch="s"), ev("b", 3)]
    progress = evaluate_by_value(f, events, "ch")
    assert {v: [e.reached for e in p.entries] for v, p in progress.items()} == {
        "s": [2],
        "t": [1],
        None: [],
    }


def test_events_before_step_one_do_not_count():
    f = funnel("a", "b")
    assert reached(f, [ev("b", 0), ev("a", 1)]) == [1]


def test_property_conditions_select_matching_events():
    f = funnel(
        {"event": "view", "where": [{"property": "price", "op": "gte", "value": 100}]},
        {"event": "buy", "where": [{"property": "plan", "op": "in", "value": ["pro", "team"]}]},
    )
    events = [ev("view", 0, price="99"), ev("view", 1, price=150), ev("buy", 2, plan="free")]
    assert reached(f, [*events, ev("buy", 3, plan="pro")]) == [2]
    assert reached(f, events) == [1]


def test_conditions_compare_as_strings_unless_numeric():
    f = funnel({"event": "a", "where": [{"property": "n", "op": "eq", "value": "7"}]}, "b")
    assert reached(f, [ev("a", 0, n=7.0)]) == [1]
    g = funnel(
        {"event": "a", "where": [{"property": "tag", "op": "contains", "value": "sum"}]}, "b"
    )
    assert reached(g, [ev("a", 0, tag="summer")]) == [1]
    assert reached(g, [ev("a", 0, tag="winter")]) == []


def test_is_set_and_not_equal_conditions():
    f = funnel({"event": "a", "where": [{"property": "ref", "op": "is_set"}]}, "b")
    assert reached(f, [ev("a", 0, ref="")]) == []
    assert reached(f, [ev("a", 0, ref="x")]) == [1]
    g = funnel({"event": "a", "where": [{"property": "ref", "op": "neq", "value": "x"}]}, "b")
    assert reached(g, [ev("a", 0)]) == [1]
    assert reached(g, [ev("a", 0, ref="x")]) == []


def test_any_event_step_matches_every_name():
    f = funnel("a", {"event": None})
    assert reached(f, [ev("a", 0), ev("whatever", 1)]) == [2]


def test_exclusion_between_steps_disqualifies_the_entry():
    f = funnel("a", "b", "c", exclusions=[{"event": "x", "from_step": 1, "to_step": 2}])
    [entry] = evaluate(f, [ev("a", 0), ev("x", 1), ev("b", 2), ev("c", 3)]).entries
    assert entry.disqualified
    [clean] = evaluate(f, [ev("a", 0), ev("b", 2), ev("x", 2.5), ev("c", 3)]).entries
    assert not clean.disqualified


def test_exclusion_tied_with_a_step_does_not_apply():
    f = funnel("a", "b", exclusions=[{"event": "x", "from_step": 1, "to_step": 2}])
    [entry] = evaluate(f, [ev("a", 0), ev("x", 0), ev("b", 2), ev("x", 2)]).entries
    assert not entry.disqualified


def test_exclusion_after_an_unfinished_step_counts_until_window_end():
    f = funnel("a", "b", window_seconds=10, exclusions=[{"event": "x"}])
    [inside] = evaluate(f, [ev("a", 0), ev("x", 10)]).entries
    [outside] = evaluate(f, [ev("a", 0), ev("x", 10.5)]).entries
    assert inside.disqualified
    assert not outside.disqualified


def test_duplicates_by_event_id_change_nothing():
    f = funnel("a", "b")
    a, b = ev("a", 0), ev("b", 1)
    assert evaluate(f, [a, b]) == evaluate(f, [b, a, a, b, b])


def test_arrival_order_does_not_matter():
    f = funnel("a", "b", "c", window_seconds=DAY)
    events = [ev("a", 0), ev("b", 10), ev("a", 20), ev("c", 30), ev("c", 40)]
    assert evaluate(f, events) == evaluate(f, list(reversed(events)))


def test_step_values_keep_tracked_properties_per_step():
    f = funnel("a", "b", breakdowns=["channel"], value_property="amount")
    [entry] = evaluate(f, [ev("a", 0, channel="ads"), ev("b", 1, amount=12.5)]).entries
    assert entry.step_values == {"channel": ("ads", None), "amount": (None, "12.5")}


def test_touches_keep_step_events_with_a_breakdown_value():
    f = funnel("a", "b", breakdowns=["channel"])
    progress = evaluate(f, [ev("a", 0), ev("b", 1, channel=0), ev("x", 2, channel="z")])
    assert [(t.ts, dict(t.values)) for t in progress.touches] == [(1 * US, {"channel": "0"})]


def test_persons_with_close_bounds_share_the_lowest():
    from services.aggregator.reevaluate import GROUP_SLACK_US, bound_groups

    slack = GROUP_SLACK_US
    bounds = {"a": 5 * slack, "b": 5 * slack + slack // 2, "c": 9 * slack, "d": 0, "e": 6 * slack}
    # e is within the slack of the group's lowest (a's), c is not.
    assert bound_groups(bounds) == [(0, ["d"]), (5 * slack, ["a", "b", "e"]), (9 * slack, ["c"])]


def test_timers_start_when_the_entry_passed_an_optional_from_step():
    f = funnel(
        "a",
        {"event": "b", "optional": True},
        "c",
        "d",
        remarketing=[{"name": "r", "from_step": 2, "goal_step": 4, "after_seconds": 10}],
    )
    progress = evaluate(f, [ev("a", 0), ev("c", 4)])
    assert [(t.due_us, t.cancelled) for t in progress.timers] == [(14 * US, False)]
    assert evaluate(f, [ev("a", 0)]).timers == ()


def test_any_order_journey_gets_one_timer_set():
    """README: an entry gets a rule's timers only when no entry that started at most one
    window before it also got to the rule's from_step."""
    rule = {"name": "r", "from_step": 1, "goal_step": 3, "after_seconds": 30}
    f = funnel("a", "b", "c", order="any", window_seconds=10, remarketing=[rule])

    def timed(*events):
        return [(t.entry_t0 // US, t.due_us // US) for t in evaluate(f, list(events)).timers]

    # Entries at 0, 5 and 12 overlap one after another: one journey, one timer.
    assert timed(ev("a", 0), ev("b", 5), ev("b", 12)) == [(0, 30)]
    # 20 s apart: two journeys.
    assert timed(ev("a", 0), ev("a", 20)) == [(0, 30), (20, 50)]
    # From step 2: the entry at 0 never gets there, so the one at 3 (a, b, c) starts the
    # journey, and the one at 11 (b, c) is part of it.
    events = [ev("a", 0), ev("a", 3), ev("b", 11), ev("c", 12)]
    rules = [{**rule, "from_step": 2, "goal_step": 4}, {**rule, "name": "s", "goal_step": 4}]
    g = funnel("a", "b", "c", "d", order="any", window_seconds=10, remarketing=rules)
    got = evaluate(g, events).timers
    assert [(t.rule, t.entry_t0 // US, t.due_us // US) for t in got] == [
        ("r", 3, 41),
        ("s", 0, 30),
    ]


def test_an_evaluation_from_a_bound_keeps_what_the_whole_history_gives_from_there():
    rule = {"name": "r", "from_step": 1, "goal_step": 3, "after_seconds": 30}
    f = funnel("a", "b", "c", order="any", window_seconds=10, remarketing=[rule])
    history = [ev("a", 0), ev("b", 8), ev("a", 15), ev("b", 40)]
    since = 12 * US
    part = Evaluator(f)([e for e in history if e.ts >= since - 10 * US], since)
    whole = evaluate(f, history)
    assert part.timers == tuple(t for t in whole.timers if t.entry_t0 >= since)
    assert part.entries == tuple(e for e in whole.entries if e.t0 >= since)
    assert [t.entry_t0 // US for t in part.timers] == [40]  # 15 is part of the journey at 8
    # Without the window before the bound, the entry at 15 would look like a journey's start.
    alone = Evaluator(f)([e for e in history if e.ts >= since], since)
    assert [t.entry_t0 // US for t in alone.timers] == [15, 40]
