"""The funnel report computed inside PostgreSQL: the same numbers as ``python.funnel_report``.

On a large range, fetching every entry and touch to count them in Python costs seconds; here
the database picks each person's counted entry (``DISTINCT ON`` over the entries), attributes
breakdown values (``DISTINCT ON`` over the touches), ranks the groups and returns one row per
group with the per-step counts, timings (``percentile_cont``, the same linear interpolation as
Python's ``statistics``) and value sums. ``python.steps_from_tally`` turns the rows into step
reports with the same formulas as the Python path. Tests check both against each other and
against the oracle on PostgreSQL.

Person ids and breakdown values are sorted and grouped with ``COLLATE "C"`` (byte order): only
their equality matters here, and the database's own collation makes those sorts slower.

Pure: this module builds the statements and reads their rows;
:func:`services.api.repository.progress.over_a_range` runs them. The SQL text is assembled
from fixed fragments and step indices only; every value that comes from a request or a
definition is a bind parameter.
"""
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.api.reports.forecast import PipelineTally
from services.api.reports.python import (
    OTHER,
    Breakdown,
    FunnelReport,
    GroupReport,
    Tally,
    Timing,
    Window,
    steps_from_tally,
)
from services.api.reports.significance import compare
from shared.funnel import US, VALUE_NUMBER, CountMode, FunnelDefinition


def _counted(count: CountMode) -> str:
    entries = """
      SELECT id, person_id COLLATE "C" AS person_id, t0_us, reached, disqualified,
             step_times AS st, step_values AS sv
      FROM funnel_entries WHERE funnel_id = :funnel AND t0_us >= :lo AND t0_us < :hi"""
    if count == "totals":
        return f"c AS (SELECT * FROM ({entries}) r WHERE NOT disqualified)"
    # A person's counted entry: the furthest clean one, on a tie the one that did its furthest
    # step first, then the latest (shared.funnel.counted_key); and only if no disqualified
    # entry of theirs got further. In one sort: the person's first entry by reach, clean before
    # disqualified, is counted unless it is disqualified.
    return f"""c AS (
      SELECT * FROM (
        SELECT DISTINCT ON (person_id) r.* FROM ({entries}) r
        ORDER BY person_id, reached DESC, disqualified, (st->>(reached - 1))::bigint, t0_us DESC,
                 id DESC) x
      WHERE NOT disqualified)"""


def _labelled(definition: FunnelDefinition, breakdown: Breakdown | None) -> str:
    """l: per counted entry, the person, reach, start and measures (see ``_measures``) and
    the breakdown value ``v``; only what the grouping needs, not the entry's JSON, so the
    rows kept for the two passes over them (group sizes, then groups) stay narrow."""
    keep = f"c.person_id, reached, t0_us{_measures(definition)}"
    if breakdown is None:
        return f'l AS (SELECT {keep}, NULL::text COLLATE "C" AS v, true AS ing FROM c)'
    if breakdown.attribution == "step":
        # ing: the entry did the attributed step (else it is in no group).
        return f"""l AS (SELECT {keep},
          (c.sv->CAST(:prop AS text)->>(CAST(:step AS int) - 1)) COLLATE "C" AS v,
          (c.st->>(CAST(:step AS int) - 1)) IS NOT NULL AS ing FROM c)"""
    order = "ts_us, seq" if breakdown.attribution == "first_touch" else "ts_us DESC, seq DESC"
    return f"""t AS (
      SELECT DISTINCT ON (person_id COLLATE "C") person_id COLLATE "C" AS person_id,
             ("values"->>:prop) COLLATE "C" AS v
      FROM funnel_touches
      WHERE funnel_id = :funnel AND ts_us >= :lo AND ts_us < :hi
        AND "values"->>:prop IS NOT NULL
      ORDER BY person_id COLLATE "C", {order}),
    l AS (SELECT {keep}, t.v, true AS ing FROM c LEFT JOIN t USING (person_id))"""


def _measures(definition: FunnelDefinition) -> str:
    """Per counted entry, read from its JSON once: d{k}, the time to step k+1 (1-based) from
    the previous step done (null when step k+1 was not done: skipped or not reached), and
    x{k}, step k+1's value when it is a number."""
    columns = []
    for k in range(1, len(definition.steps)):
        if any(s.optional for s in definition.steps[:k]):
            earlier = ", ".join(f"(st->>{i})::bigint" for i in reversed(range(k)))
            previous = f"COALESCE({earlier})"
        else:
            previous = f"(st->>{k - 1})::bigint"
        columns.append(f"(st->>{k})::bigint - {previous} AS d{k}")
    if definition.value_property is not None:
        columns.extend(f"{_number_at(k)} AS x{k}" for k in range(len(definition.steps)))
    return "".join(f", {c}" for c in columns)


def _number_at(k: int) -> str:
    """Step k+1's value of the value property (0-based k) when reached and a number."""
    raw = f"(CASE WHEN reached > {k} THEN sv->:value_property->>{k} END)"
    return f"CASE WHEN {raw} ~ :number THEN {raw}::float8 END"


def step_aggregates(
    definition: FunnelDefinition,
    open_window: str = ":now < t0_us + :window",
    quantiles: str = "percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY {d})",
    mean: str = "avg({d})::float8",
) -> str:
    """Seven columns per step (``report_from_rows`` reads them), in PostgreSQL's dialect
    unless told the engine's spelling of the open-window test, median-and-p90 and mean."""
    columns = []
    for k in range(len(definition.steps)):
        columns.append(f"count(d{k})" if k else "count(*)")  # entries that did step k+1
        columns.append(f"count(*) FILTER (WHERE reached = {k + 1})")
        columns.append(f"count(*) FILTER (WHERE reached = {k + 1} AND {open_window})")
        if k:
            # Median and p90 from one sort of the durations.
            columns.extend([quantiles.format(d=f"d{k}"), mean.format(d=f"d{k}")])
        else:
            columns.extend(["NULL", "NULL"])
        if definition.value_property is not None:
            columns.extend([f"sum(x{k})", f"avg(x{k})"])
        else:
            columns.extend(["NULL", "NULL"])
    return ",\n      ".join(columns)


def report_query(
    definition: FunnelDefinition, count: CountMode, breakdown: Breakdown | None
) -> str:
    """One row per group, and one for the whole range: six key columns (whole, kind, pos,
    label, and two used inside), then seven per step (see ``step_aggregates``)."""
    if breakdown is None:
        # GROUPING SETS (()) rather than a plain aggregate: the same one row, and faster
        # (docs/api-design.md).
        return f"""
    WITH {_counted(count)},
    {_labelled(definition, breakdown)},
    g AS (SELECT l.*, 0 AS grp FROM l)
    SELECT true, NULL::int, NULL::bigint, NULL::text, true, 0,
      {step_aggregates(definition)}
    FROM g GROUP BY GROUPING SETS (())"""
    # Counting uniques, c holds one row per person: count(*) then, which can hash.
    persons = "count(*)" if count == "uniques" else "count(DISTINCT person_id)"
    # Groups are numbered by one small integer, which keeps the sort under the grouping cheap
    # (no text, no second key): 1..limit for the top values by persons, limit + 1 for the
    # others, limit + 2 for a missing value. Labels are joined back to the few result rows.
    return f"""
    WITH {_counted(count)},
    {_labelled(definition, breakdown)},
    sizes AS (SELECT v, {persons} AS persons FROM l
              WHERE v IS NOT NULL AND ing GROUP BY v),
    ranked AS (SELECT v, row_number() OVER (ORDER BY persons DESC, v COLLATE "C") AS pos
               FROM sizes),
    g AS (SELECT l.*,
                 CASE WHEN NOT l.ing THEN -1 WHEN l.v IS NULL THEN :limit + 2
                      ELSE least(ranked.pos, :limit + 1) END::int AS grp
          FROM l LEFT JOIN ranked USING (v))
    SELECT t.whole,
      CASE WHEN t.grp <= :limit THEN 0 WHEN t.grp = :limit + 1 THEN 1 ELSE 2 END AS kind,
      CASE WHEN t.grp <= :limit THEN t.grp END AS pos,
      ranked.v AS label, t.*
    FROM (SELECT GROUPING(grp) = 1 AS whole, grp,
            {step_aggregates(definition)}
          FROM g GROUP BY GROUPING SETS ((), (grp))) t
    LEFT JOIN ranked ON ranked.pos = t.grp AND t.grp <= :limit
    WHERE t.whole OR t.grp >= 0"""


def _tally(row: Any, n: int) -> Tally:
    done, stopped, open_, values = [], [], [], []
    timings: list[Timing | None] = []
    columns = list(row)[6:]
    for k in range(n):
        did, s, o, percentiles, mean, total, average = columns[7 * k : 7 * k + 7]
        done.append(int(did))
        stopped.append(int(s))
        open_.append(int(o))
        # Both percentiles, or NULL when no entry of the group took this step.
        if percentiles is not None and percentiles[0] is not None:
            median, p90 = percentiles
            timings.append(Timing(median / US, p90 / US, mean / US))
        else:
            timings.append(None)
        values.append((float(total), float(average)) if total is not None else None)
    return Tally(done, stopped, open_, timings, values)


def _params(funnel_id: str, definition: FunnelDefinition, window: Window) -> dict[str, Any]:
    """The bind parameters every statement here reads."""
    return {
        "funnel": funnel_id,
        "lo": window.start,
        "hi": window.end,
        "now": window.now,
        "window": definition.window_us,
        "number": VALUE_NUMBER,
        "value_property": definition.value_property,
    }


def report_statement(
    funnel_id: str,
    definition: FunnelDefinition,
    window: Window,
    count: CountMode = "uniques",
    breakdown: Breakdown | None = None,
) -> tuple[str, dict[str, Any]]:
    """The report's statement and its bind parameters."""
    params = _params(funnel_id, definition, window)
    if breakdown is not None:
        params.update(prop=breakdown.property, step=breakdown.step, limit=breakdown.limit)
    return report_query(definition, count, breakdown), params


def report_from_rows(
    definition: FunnelDefinition, rows: Sequence[Any], breakdown: Breakdown | None
) -> FunnelReport:
    """The report the rows of :func:`report_statement` make."""
    n = len(definition.steps)
    empty = Tally([0] * n, [0] * n, [0] * n, [None] * n, [None] * n)
    whole = next((r for r in rows if r[0]), None)
    steps = steps_from_tally(definition, _tally(whole, n) if whole else empty)
    if breakdown is None:
        return FunnelReport(steps)
    groups = sorted((r for r in rows if not r[0]), key=lambda r: (r[1], r[2] or 0))
    entered, converted = steps[0].persons, steps[-1].persons
    found = []
    for r in groups:
        # Groups are disjoint parts of the whole: the rest is the whole less the group.
        group_steps = steps_from_tally(definition, _tally(r, n))
        n1, x1 = group_steps[0].persons, group_steps[-1].persons
        found.append(
            GroupReport(
                r[3] if r[1] == 0 else OTHER if r[1] == 1 else None,
                group_steps,
                compare(x1, n1, converted - x1, entered - n1),
            )
        )
    return FunnelReport(steps, tuple(found))


def pipeline_query(definition: FunnelDefinition, count: CountMode) -> str:
    """Counted entries by steps reached and open or closed window, with the sum of their
    values (each entry's latest numeric value along its steps, as ``entry_value``)."""
    value = "NULL::float8"
    if definition.value_property is not None:
        latest = (_number_at(k) for k in reversed(range(len(definition.steps))))
        value = f"COALESCE({', '.join(latest)})"
    return f"""
    WITH {_counted(count)}
    SELECT reached, t0_us + :window > :now AS open, count(*), sum({value})
    FROM c GROUP BY 1, 2"""


def pipeline_statement(
    funnel_id: str, definition: FunnelDefinition, window: Window, count: CountMode
) -> tuple[str, dict[str, Any]]:
    return pipeline_query(definition, count), _params(funnel_id, definition, window)


def pipeline_from_rows(definition: FunnelDefinition, rows: Sequence[Any]) -> PipelineTally:
    n = len(definition.steps)
    open_, open_value, closed = [0] * n, [0.0] * n, [0] * n
    for reached, is_open, entries, value in rows:
        if is_open:
            open_[reached - 1], open_value[reached - 1] = entries, float(value or 0.0)
        else:
            closed[reached - 1] = entries
    return PipelineTally(tuple(open_), tuple(open_value), tuple(closed))
