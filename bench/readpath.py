"""The report's answer computed other ways, to compare and time against ours: ClickHouse's
``windowFunnel`` over the raw events (embedded, ``chdb``), and a prototype of a columnar read
path, DuckDB over the bounds layout (``shared/bounds.py``).

An answer maps each breakdown value (and ``ALL`` for the whole range) to one (persons, median
seconds from the previous step) pair per step; windowFunnel gives no per-step times, so its
medians are ``None`` and only its counts are compared.

windowFunnel against our rules, for this workload (ordered funnel, 7-day window, first-touch
breakdown, no exclusions, one event per step name, no two events of a person at one instant):

- ``ordered`` (other events may come between) is windowFunnel's default mode, not
  ``'strict_order'`` (that is our ``strict``); ``'strict_increase'`` is not set, as our steps
  done at the same instant convert; the window counts from the step-1 event, as ours, and
  both include its end instant;
- the date range selects entries: condition 1 is "step 1 and in [lo, hi)"; later steps are
  read up to hi + window;
- uniques: windowFunnel's level is the furthest step any chain reached, which is our counted
  entry's reach when no entry is disqualified (a chain takes each next step at its earliest
  event, as our ordered path does);
- first touch: ``argMinIf(channel, ts, ts in [lo, hi))`` over events that match a step (all
  do here); ours breaks a tie in time by step, then event id, which never arises here.
"""
# ruff: noqa: S608 (statements built from constants of this benchmark only)

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq

from bench.journeys import RANGE_US, STEPS, WINDOW_US, Journeys, bounds_columns, touch_previous
from tests.workload import CHANNELS

ALL = "(all)"
Answer = dict[str | None, tuple[tuple[int, float | None], ...]]


def same_answers(name: str, ours: Answer, theirs: Answer, *, medians: bool = True) -> None:
    """Fail loudly unless both give the same persons per step per group (and medians)."""
    assert ours.keys() == theirs.keys(), (name, sorted(map(str, ours)), sorted(map(str, theirs)))
    for group, steps in ours.items():
        other = theirs[group]
        assert [p for p, _ in steps] == [p for p, _ in other], (name, group, steps, other)
        if medians:
            for (_, a), (_, b) in zip(steps, other, strict=True):
                assert (a is None) == (b is None), (name, group, steps, other)
                assert a is None or b is None or math.isclose(a, b, rel_tol=1e-9), (name, group)


def timed(run: Callable[[], Any], runs: int) -> list[float]:
    found = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        found.append(time.perf_counter() - started)
    return found


def raw_events_table(j: Journeys) -> pa.Table:
    ids = np.array([f"p{p:07d}" for p in range(j.persons)])
    return pa.table(
        {
            "person_id": ids[j.ev_person],
            "name": np.array(STEPS)[j.ev_step],
            "ts": j.ev_ts.astype(np.uint64),
            "channel": np.array(CHANNELS)[j.ev_channel],
        }
    )


class ClickHouse:
    """chdb with the raw events in a MergeTree table sorted by person and time."""

    def __init__(self, j: Journeys) -> None:
        from chdb import session

        folder = Path(tempfile.mkdtemp())
        pq.write_table(raw_events_table(j), folder / "events.parquet")
        self.session = self._s = session.Session(str(folder / "ch"))
        self._s.query(
            "CREATE TABLE ev (person_id String, name LowCardinality(String), ts UInt64, "
            "channel LowCardinality(String)) ENGINE = MergeTree ORDER BY (person_id, ts)"
        )
        self._s.query(f"INSERT INTO ev SELECT * FROM file('{folder}/events.parquet', Parquet)")
        self._s.query("OPTIMIZE TABLE ev FINAL")

    def query(self) -> str:
        lo, hi = RANGE_US
        steps = ", ".join(f"name = '{s}'" for s in STEPS[1:])
        return f"""
        SELECT channel, level, count() FROM (
          SELECT person_id,
            windowFunnel({WINDOW_US})(ts, name = '{STEPS[0]}' AND ts >= {lo} AND ts < {hi},
                                      {steps}) AS level,
            argMinIf(channel, ts, ts >= {lo} AND ts < {hi}) AS channel
          FROM ev WHERE ts >= {lo} AND ts <= {hi + WINDOW_US}
          GROUP BY person_id)
        WHERE level > 0 GROUP BY channel, level"""

    def answer(self) -> Answer:
        rows = self._s.query(self.query(), "CSV").bytes().decode().splitlines()
        levels: dict[str | None, list[int]] = {}
        for row in rows:
            channel, level, persons = row.rsplit(",", 2)
            levels.setdefault(channel.strip('"'), [0] * len(STEPS))[int(level) - 1] = int(persons)
        totals = [sum(c) for c in zip(*levels.values(), strict=True)]
        return {key: _reached(stopped) for key, stopped in [(ALL, totals), *levels.items()]}


def _reached(stopped: Sequence[int]) -> tuple[tuple[int, float | None], ...]:
    """Persons at each step from the persons whose furthest step it is."""
    return tuple((sum(stopped[k:]), None) for k in range(len(stopped)))


class BoundsLayout:
    """DuckDB over the bounds layout: integer persons, typed columns, per entry its bounds
    and the times from each step to the next, per touch its previous touch's instant."""

    def __init__(self, j: Journeys, bounds: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        import duckdb

        self.built_s = -time.perf_counter()
        left, right = bounds_columns(j) if bounds is None else bounds
        self.built_s += time.perf_counter()
        gaps = {}
        for k in range(1, len(STEPS)):
            d = j.times[:, k] - j.times[:, k - 1]
            gaps[f"d{k}"] = pa.array(d, mask=j.times[:, k] < 0)
        entries = pa.table(
            {
                "person": j.person.astype(np.int32),
                "t0": j.t0,
                "lft": left,
                "rgt": right,
                "reached": j.reached.astype(np.uint8),
                **gaps,
            }
        )
        touches = pa.table(
            {
                "person": j.ev_person.astype(np.int32),
                "ts": j.ev_ts,
                "prev": touch_previous(j),
                "channel": np.array(CHANNELS)[j.ev_channel],
            }
        )
        self.entries, self.touches = entries, touches
        self._db = duckdb.connect()
        before = self.memory_bytes()
        self.loaded_s = -time.perf_counter()
        names = ", ".join(f"'{c}'" for c in CHANNELS)
        self._run(f"CREATE TYPE channel AS ENUM ({names})")
        self._db.register("entries_in", entries)
        self._db.register("touches_in", touches)
        self._run("CREATE TABLE entries AS SELECT * FROM entries_in")
        self._run(
            "CREATE TABLE touches AS SELECT person, ts, prev, channel::channel AS channel "
            "FROM touches_in"
        )
        self._db.unregister("entries_in")
        self._db.unregister("touches_in")
        self.loaded_s += time.perf_counter()
        self.table_bytes = self.memory_bytes() - before

    def apply(self, persons: np.ndarray) -> None:
        """Replace these persons' rows, in one transaction, as a replica applies the persons
        a committed batch changed (here with the rows they already had)."""
        entries = self.entries.filter(pa.compute.is_in(self.entries["person"], pa.array(persons)))
        touches = self.touches.filter(pa.compute.is_in(self.touches["person"], pa.array(persons)))
        db = self._db
        db.register("entries_new", entries)
        db.register("touches_new", touches)
        self._run("BEGIN")
        changed = "SELECT unnest($persons)"
        self._run(f"DELETE FROM entries WHERE person IN ({changed})", {"persons": persons})
        self._run(f"DELETE FROM touches WHERE person IN ({changed})", {"persons": persons})
        self._run("INSERT INTO entries SELECT * FROM entries_new")
        self._run("INSERT INTO touches SELECT person, ts, prev, channel::channel FROM touches_new")
        self._run("COMMIT")
        db.unregister("entries_new")
        db.unregister("touches_new")

    def applied_batches(self, persons: int, each: int, batches: int) -> list[float]:
        """Latencies of applying ``batches`` commits of ``each`` random persons."""
        rng = np.random.default_rng(11)
        chosen = [rng.choice(persons, each, replace=False).astype(np.int32) for _ in range(batches)]
        return timed(lambda: self.apply(chosen.pop()), batches)

    def _run(self, statement: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Run a statement to its end (a result left unread blocks the connection)."""
        return self._db.execute(statement, params).fetchall()

    def memory_bytes(self) -> int:
        return int(self._run("SELECT sum(memory_usage_bytes) FROM duckdb_memory()")[0][0])

    def query(self) -> str:
        n = len(STEPS)
        counts = ", ".join(f"count(*) FILTER (WHERE reached >= {k + 1})" for k in range(n))
        medians = ", ".join(f"quantile_cont(d{k}, 0.5)" for k in range(1, n))
        return f"""
        WITH c AS (
          SELECT person, reached, {", ".join(f"d{k}" for k in range(1, n))} FROM entries
          WHERE t0 >= $lo AND t0 < $hi AND lft < $lo AND rgt >= $hi),
        f AS (SELECT person, channel FROM touches WHERE ts >= $lo AND ts < $hi AND prev < $lo)
        SELECT GROUPING(channel) = 1, channel::VARCHAR, {counts}, {medians}
        FROM c LEFT JOIN f USING (person) GROUP BY GROUPING SETS ((), (channel))"""

    def answer(self) -> Answer:
        lo, hi = RANGE_US
        rows = self._run(self.query(), {"lo": lo, "hi": hi})
        return {ALL if r[0] else r[1]: steps_answer(r[2:]) for r in rows}


class ClickHouseBounds:
    """chdb over the same bounds layout as ``BoundsLayout`` (the other columnar candidate)."""

    def __init__(self, clickhouse: ClickHouse, layout: BoundsLayout) -> None:
        folder = Path(tempfile.mkdtemp())
        pq.write_table(layout.entries, folder / "entries.parquet")
        pq.write_table(layout.touches, folder / "touches.parquet")
        self._s = clickhouse.session  # chdb allows one session (one data path) per process
        gaps = ", ".join(f"d{k} Nullable(Int64)" for k in range(1, len(STEPS)))
        self._s.query(
            f"CREATE TABLE entries (person Int32, t0 Int64, lft Int64, rgt Int64, reached UInt8, "
            f"{gaps}) ENGINE = MergeTree ORDER BY t0"
        )
        self._s.query(
            "CREATE TABLE touches (person Int32, ts Int64, prev Int64, "
            "channel LowCardinality(String)) ENGINE = MergeTree ORDER BY ts"
        )
        for table in ("entries", "touches"):
            self._s.query(f"INSERT INTO {table} SELECT * FROM file('{folder}/{table}.parquet')")

    def query(self) -> str:
        lo, hi = RANGE_US
        n = len(STEPS)
        counts = ", ".join(f"countIf(reached >= {k + 1})" for k in range(n))
        medians = ", ".join(f"quantileExactInclusive(0.5)(d{k})" for k in range(1, n))
        return f"""
        SELECT grouping(channel) = 1, channel, {counts}, {medians}
        FROM (SELECT person, reached, {", ".join(f"d{k}" for k in range(1, n))} FROM entries
              WHERE t0 >= {lo} AND t0 < {hi} AND lft < {lo} AND rgt >= {hi}) c
        LEFT JOIN (SELECT person, channel FROM touches
                   WHERE ts >= {lo} AND ts < {hi} AND prev < {lo}) f USING (person)
        GROUP BY GROUPING SETS ((), (channel))
        SETTINGS join_use_nulls = 1"""

    def answer(self) -> Answer:
        found = self._s.query(self.query(), "JSONCompact").bytes()
        rows = orjson.loads(found)["data"]
        n = len(STEPS)
        return {
            ALL if r[0] else r[1]: steps_answer([int(x) for x in r[2 : 2 + n]] + r[2 + n :])
            for r in rows
        }


def steps_answer(row: Sequence[Any]) -> tuple[tuple[int, float | None], ...]:
    """(persons per step..., median µs from step 1 to 2, ...) as an answer's steps."""
    n = len(STEPS)
    medians = [None, *[None if m is None else float(m) / 1e6 for m in row[n : 2 * n - 1]]]
    return tuple((int(row[k]), medians[k]) for k in range(n))
