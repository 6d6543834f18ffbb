"""The funnel report over the bounds layout, as the API's columnar replica holds it: pure.

The replica (:mod:`services.api.replica`) holds, per funnel, each entry with the bounds within
which it is its person's counted one (``services.aggregator.bounds.entry_bounds``, computed
from all of the person's entries) and each touch with the instants of the person's previous
and next touch with a value of the same property (``touch_bounds``); persons are integers.
The report is then range filters plus one integer join, with no per-person sort:

- counted (``uniques``): ``lo <= t0 < hi and left < lo and right >= hi``; ``totals``: every
  clean entry in range (not in ``any`` order, whose attempts are chosen one after another);
- first touch: ``lo <= ts < hi and previous < lo``; last touch: ``next >= hi``.

The statement returns the rows of :func:`services.api.reports.sql.report_query` (same
columns, same grouping), so :func:`services.api.reports.sql.report_from_rows` makes the
report with the same formulas as the other paths. Values come in as bind parameters; the
text is made of fixed fragments and step indices only.
"""
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.aggregator.bounds import entry_bounds, touch_bounds
from services.api.reports import sql
from services.api.reports.python import Breakdown, Window
from shared.funnel import CountMode, Entry, FunnelDefinition, Touch, value_number

ENTRY_COLUMNS = ("person", "t0", "lft", "rgt", "reached", "disqualified", "st", "x")
TOUCH_COLUMNS = ("person", "prop", "ts", "prev", "nxt", "v")


def covers(definition: FunnelDefinition, count: CountMode, breakdown: Breakdown | None) -> bool:
    """Whether the layout answers this report exactly: no breakdown or a declared one by
    first or last touch; ``uniques``, or ``totals`` but in ``any`` order."""
    if count == "totals" and definition.order == "any":
        return False
    if breakdown is None:
        return True
    return (
        breakdown.attribution in ("first_touch", "last_touch")
        and breakdown.property in definition.breakdowns
    )


@dataclass(frozen=True, slots=True)
class PersonRows:
    """One person's rows of the layout (tuples of ``ENTRY_COLUMNS`` and ``TOUCH_COLUMNS``)."""

    entries: list[tuple[Any, ...]]
    touches: list[tuple[Any, ...]]


def person_rows(
    definition: FunnelDefinition,
    person: int,
    entries: Sequence[Entry],
    touches: Sequence[Touch],
) -> PersonRows:
    """The layout's rows of one person of the funnel, from all of their entries and touches."""
    n = len(definition.steps)
    prop = definition.value_property
    rows = []
    for e, b in zip(entries, entry_bounds(entries), strict=True):
        x = None
        if prop is not None:
            values = e.step_values.get(prop, ())
            x = [
                value_number(values[k]) if e.reached > k and k < len(values) else None
                for k in range(n)
            ]
        rows.append((person, e.t0, b.left, b.right, e.reached, e.disqualified, e.step_times, x))
    found = []
    for index, name in enumerate(definition.breakdowns):
        for t in touch_bounds(touches, name):
            found.append((person, index, t.touch.ts, t.previous, t.next, t.touch.values[name]))
    return PersonRows(rows, found)


def _measures(definition: FunnelDefinition) -> str:
    """d{k}: the time to step k+1 (1-based) from the previous step done; x{k}: step k+1's
    value when it is a number (lists are 1-based; out of range reads NULL)."""
    columns = []
    for k in range(1, len(definition.steps)):
        if any(s.optional for s in definition.steps[:k]):
            previous = f"COALESCE({', '.join(f'st[{i + 1}]' for i in reversed(range(k)))})"
        else:
            previous = f"st[{k}]"
        columns.append(f"st[{k + 1}] - {previous} AS d{k}")
    if definition.value_property is not None:
        columns.extend(f"x[{k + 1}] AS x{k}" for k in range(len(definition.steps)))
    return "".join(f", {c}" for c in columns)


def _aggregates(definition: FunnelDefinition) -> str:
    return sql.step_aggregates(
        definition, "$now < t0 + $window", "quantile_cont({d}, [0.5, 0.9])", "avg({d})::DOUBLE"
    )


def report_statement(
    funnel: int,
    definition: FunnelDefinition,
    window: Window,
    count: CountMode = "uniques",
    breakdown: Breakdown | None = None,
) -> tuple[str, dict[str, Any]]:
    """The DuckDB statement of a report :func:`covers` (``funnel``: the replica's integer key
    of the funnel), and its parameters."""
    if count == "totals":
        counted = "NOT disqualified"
    else:
        counted = "(lft IS NULL OR lft < $lo) AND (rgt IS NULL OR rgt >= $hi)"
    params: dict[str, Any] = {
        "funnel": funnel,
        "lo": window.start,
        "hi": window.end,
        "now": window.now,
        "window": definition.window_us,
    }
    c = f"""c AS (SELECT person, t0, reached, st, x FROM entries
      WHERE funnel = $funnel AND t0 >= $lo AND t0 < $hi AND {counted})"""
    keep = f"c.person, reached, t0{_measures(definition)}"
    if breakdown is None:
        return (
            f"""
    WITH {c}, l AS (SELECT {keep} FROM c)
    SELECT true, NULL, NULL, NULL, true, 0,
      {_aggregates(definition)}
    FROM l GROUP BY GROUPING SETS (())""",
            params,
        )
    edge = "(prev IS NULL OR prev < $lo)"
    if breakdown.attribution == "last_touch":
        edge = "(nxt IS NULL OR nxt >= $hi)"
    # Properties are numbered by their place among the funnel's declared breakdowns.
    params.update(prop=definition.breakdowns.index(breakdown.property), limit=breakdown.limit)
    persons = "count(*)" if count == "uniques" else "count(DISTINCT person)"
    return (
        f"""
    WITH {c},
    t AS (SELECT person, v FROM touches
          WHERE funnel = $funnel AND prop = $prop AND ts >= $lo AND ts < $hi AND {edge}),
    l AS MATERIALIZED (SELECT {keep}, t.v FROM c LEFT JOIN t USING (person)),
    sizes AS (SELECT v, {persons} AS persons FROM l WHERE v IS NOT NULL GROUP BY v),
    ranked AS (SELECT v, row_number() OVER (ORDER BY persons DESC, v) AS pos FROM sizes),
    g AS (SELECT l.*,
                 CASE WHEN l.v IS NULL THEN $limit + 2
                      ELSE least(ranked.pos, $limit + 1) END::INTEGER AS grp
          FROM l LEFT JOIN ranked USING (v))
    SELECT t.whole,
      CASE WHEN t.grp <= $limit THEN 0 WHEN t.grp = $limit + 1 THEN 1 ELSE 2 END AS kind,
      CASE WHEN t.grp <= $limit THEN t.grp END AS pos,
      ranked.v AS label, t.*
    FROM (SELECT GROUPING(grp) = 1 AS whole, grp,
            {_aggregates(definition)}
          FROM g GROUP BY GROUPING SETS ((), (grp))) t
    LEFT JOIN ranked ON ranked.pos = t.grp AND t.grp <= $limit""",
        params,
    )


def pipeline_statement(
    funnel: int, definition: FunnelDefinition, window: Window, count: CountMode
) -> tuple[str, dict[str, Any]]:
    """The DuckDB statement of the pipeline forecast's tally (:func:`covers` with no
    breakdown), rows as :func:`services.api.reports.sql.pipeline_query`'s: counted entries by
    steps reached and open or closed window, with the sum of their values (each entry's
    latest numeric value along its steps, as ``shared.funnel.entry_value``)."""
    if count == "totals":
        counted = "NOT disqualified"
    else:
        counted = "(lft IS NULL OR lft < $lo) AND (rgt IS NULL OR rgt >= $hi)"
    value = "NULL::DOUBLE"
    if definition.value_property is not None:
        latest = ", ".join(f"x[{k + 1}]" for k in reversed(range(len(definition.steps))))
        value = f"COALESCE({latest})"
    params: dict[str, Any] = {
        "funnel": funnel,
        "lo": window.start,
        "hi": window.end,
        "now": window.now,
        "window": definition.window_us,
    }
    return (
        f"""
    SELECT reached, t0 + $window > $now AS open, count(*), sum({value})
    FROM entries
    WHERE funnel = $funnel AND t0 >= $lo AND t0 < $hi AND {counted}
    GROUP BY 1, 2""",
        params,
    )


def cohorts_statement(
    funnel: int, definition: FunnelDefinition, windows: Sequence[Window], count: CountMode
) -> tuple[str, dict[str, Any]]:
    """One DuckDB statement for the reports of several disjoint ranges in ascending order
    sharing one "now" (trends' cohorts; :func:`covers` with no breakdown): each entry is
    joined to the range it starts in (an as-of join: the last range starting at or before
    it, if the entry starts before that range's end) and counted by that range's bounds.
    One row per range that has a counted entry: its position in ``windows``, then the row of
    :func:`report_statement`."""
    if count == "totals":
        counted = "NOT disqualified"
    else:
        counted = "(lft IS NULL OR lft < w.lo) AND (rgt IS NULL OR rgt >= w.hi)"
    params: dict[str, Any] = {
        "funnel": funnel,
        "los": [w.start for w in windows],
        "his": [w.end for w in windows],
        "cohorts": list(range(len(windows))),
        "lo": min(w.start for w in windows),
        "hi": max(w.end for w in windows),
        "now": windows[0].now,
        "window": definition.window_us,
    }
    return (
        f"""
    WITH w AS (SELECT unnest($los) AS lo, unnest($his) AS hi, unnest($cohorts) AS cohort),
    e AS (SELECT * FROM entries WHERE funnel = $funnel AND t0 >= $lo AND t0 < $hi),
    c AS (SELECT w.cohort, t0, reached, st, x FROM e ASOF JOIN w ON e.t0 >= w.lo
          WHERE t0 < w.hi AND {counted}),
    l AS (SELECT cohort, reached, t0{_measures(definition)} FROM c)
    SELECT cohort, true, NULL, NULL, NULL, true, 0,
      {_aggregates(definition)}
    FROM l GROUP BY cohort""",
        params,
    )
