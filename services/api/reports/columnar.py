"""The funnel report over the bounds layout, as the API's columnar replica holds it: pure.

The replica (:mod:`services.api.replica`) holds, per funnel version, one table of entries
and one of touches, typed columns only, persons as integers:

- entries: ``person, t0, lft, rgt, reached, dq``, the step times ``s1..sN``, the durations
  ``d1..d(N-1)`` (``dk``: step k+1 from the previous step done, skipped optional steps passed
  over; NULL when step k+1 was not done) and, with a value property, the step values as
  numbers ``x0..x(N-1)`` (0-based, as ``sql.step_aggregates`` reads them). ``lft``/``rgt``
  are the stored bounds (``shared.bounds``, migration 0013): the entry is its person's
  counted one in ``[lo, hi)`` exactly when it starts there, ``lft < lo`` and ``rgt >= hi``.
- touches: ``person, prop, ts, prev, nxt, v``, one row per touch and breakdown property it
  has a value of (``prop``: the property's place among the funnel's breakdowns), ``v`` a code
  of the labels table (``code, label``); first touch in range: ``prev < lo``, last: ``nxt >= hi``.

The report is then range filters plus one integer join, with no per-person sort. The
statement returns the rows of :func:`services.api.reports.sql.report_query` (same columns,
same grouping), so :func:`services.api.reports.sql.report_from_rows` makes the report with
the same formulas as the other paths. Values come in as bind parameters; the text is made of
fixed fragments, table names the replica makes and step indices only.
"""
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.api.reports import sql
from services.api.reports.python import Breakdown, Window
from shared.conditions import VALUE_NUMBER
from shared.funnel import CountMode, FunnelDefinition


@dataclass(frozen=True, slots=True)
class Tables:
    """The names of one held funnel version's tables."""

    entries: str
    touches: str
    labels: str


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


def entry_schema(definition: FunnelDefinition) -> list[tuple[str, str]]:
    """The entries table's columns and types."""
    n = len(definition.steps)
    columns = [("person", "INTEGER"), ("t0", "BIGINT"), ("lft", "BIGINT"), ("rgt", "BIGINT")]
    columns += [("reached", "UTINYINT"), ("dq", "BOOLEAN")]
    columns += [(f"s{k}", "BIGINT") for k in range(1, n + 1)]
    columns += [(f"d{k}", "BIGINT") for k in range(1, n)]
    if definition.value_property is not None:
        columns += [(f"x{k}", "DOUBLE") for k in range(n)]
    return columns


TOUCH_SCHEMA = [
    ("person", "INTEGER"),
    ("prop", "UTINYINT"),
    ("ts", "BIGINT"),
    ("prev", "BIGINT"),
    ("nxt", "BIGINT"),
    ("v", "INTEGER"),
]


def entry_expressions(definition: FunnelDefinition) -> list[str]:
    """Per entries column, its expression over the staged columns (``person`` already a
    key; ``s1..sN`` step times, ``v1..vN`` the value property's step values as text)."""
    n = len(definition.steps)
    found = ["person", "t0", "lft", "rgt", "reached", "dq"]
    found += [f"s{k}" for k in range(1, n + 1)]
    for k in range(1, n):
        if any(s.optional for s in definition.steps[:k]):
            previous = f"COALESCE({', '.join(f's{i}' for i in range(k, 0, -1))})"
        else:
            previous = f"s{k}"
        found.append(f"s{k + 1} - {previous}")
    if definition.value_property is not None:
        pattern = VALUE_NUMBER.replace("'", "''")
        found += [
            f"CASE WHEN reached >= {k} AND regexp_full_match(v{k}, '{pattern}') "
            f"THEN TRY_CAST(v{k} AS DOUBLE) END"
            for k in range(1, n + 1)
        ]
    return found


def _aggregates(definition: FunnelDefinition) -> str:
    return sql.step_aggregates(
        definition, "$now < t0 + $window", "quantile_cont({d}, [0.5, 0.9])", "avg({d})::DOUBLE"
    )


def _params(definition: FunnelDefinition, window: Window) -> dict[str, Any]:
    return {"lo": window.start, "hi": window.end, "now": window.now, "window": definition.window_us}


def _counted(tables: Tables, definition: FunnelDefinition, count: CountMode) -> str:
    if count == "totals":
        counted = "NOT dq"
    else:
        counted = "(lft IS NULL OR lft < $lo) AND (rgt IS NULL OR rgt >= $hi)"
    return f"""c AS (SELECT * FROM {tables.entries}
      WHERE t0 >= $lo AND t0 < $hi AND {counted})"""


def report_statement(
    tables: Tables,
    definition: FunnelDefinition,
    window: Window,
    count: CountMode = "uniques",
    breakdown: Breakdown | None = None,
) -> tuple[str, dict[str, Any]]:
    """The DuckDB statement of a report :func:`covers`, and its parameters."""
    params = _params(definition, window)
    c = _counted(tables, definition, count)
    if breakdown is None:
        return (
            f"""
    WITH {c}
    SELECT true, NULL, NULL, NULL, true, 0,
      {_aggregates(definition)}
    FROM c GROUP BY GROUPING SETS (())""",
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
    t AS (SELECT person, v FROM {tables.touches}
          WHERE prop = $prop AND ts >= $lo AND ts < $hi AND {edge}),
    l AS MATERIALIZED (SELECT c.*, t.v FROM c LEFT JOIN t USING (person)),
    sizes AS (SELECT v, {persons} AS persons FROM l WHERE v IS NOT NULL GROUP BY v),
    ranked AS (SELECT v, label, row_number() OVER (ORDER BY persons DESC, label) AS pos
               FROM sizes JOIN {tables.labels} ON code = v),
    g AS (SELECT l.*,
                 CASE WHEN l.v IS NULL THEN $limit + 2
                      ELSE least(ranked.pos, $limit + 1) END::INTEGER AS grp
          FROM l LEFT JOIN ranked USING (v))
    SELECT t.whole,
      CASE WHEN t.grp <= $limit THEN 0 WHEN t.grp = $limit + 1 THEN 1 ELSE 2 END AS kind,
      CASE WHEN t.grp <= $limit THEN t.grp END AS pos,
      ranked.label, t.*
    FROM (SELECT GROUPING(grp) = 1 AS whole, grp,
            {_aggregates(definition)}
          FROM g GROUP BY GROUPING SETS ((), (grp))) t
    LEFT JOIN ranked ON ranked.pos = t.grp AND t.grp <= $limit""",
        params,
    )


def pipeline_statement(
    tables: Tables, definition: FunnelDefinition, window: Window, count: CountMode
) -> tuple[str, dict[str, Any]]:
    """The rows of :func:`services.api.reports.sql.pipeline_query` from the replica:
    counted entries by steps reached and open window, with the sum of their latest values."""
    value = "NULL::DOUBLE"
    if definition.value_property is not None:
        n = len(definition.steps)
        value = f"COALESCE({', '.join(f'x{k}' for k in range(n - 1, -1, -1))})"
    return (
        f"""
    WITH {_counted(tables, definition, count)}
    SELECT reached, t0 + $window > $now AS open, count(*), sum({value})
    FROM c GROUP BY 1, 2""",
        _params(definition, window),
    )


def cohorts_statement(
    tables: Tables, definition: FunnelDefinition, windows: Sequence[Window], count: CountMode
) -> tuple[str, dict[str, Any]]:
    """One DuckDB statement for the reports of several disjoint ranges in ascending order
    sharing one "now" (trends' cohorts; :func:`covers` with no breakdown): each entry is
    joined to the range it starts in (an as-of join: the last range starting at or before
    it, if the entry starts before that range's end) and counted by that range's bounds.
    One row per range that has a counted entry: its position in ``windows``, then the row of
    :func:`report_statement`."""
    if count == "totals":
        counted = "NOT dq"
    else:
        counted = "(lft IS NULL OR lft < w.lo) AND (rgt IS NULL OR rgt >= w.hi)"
    params: dict[str, Any] = {
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
    e AS (SELECT * FROM {tables.entries} WHERE t0 >= $lo AND t0 < $hi),
    c AS (SELECT w.cohort, e.* FROM e ASOF JOIN w ON e.t0 >= w.lo
          WHERE e.t0 < w.hi AND {counted})
    SELECT cohort, true, NULL, NULL, NULL, true, 0,
      {_aggregates(definition)}
    FROM c GROUP BY cohort""",
        params,
    )
